"""Errors yolo-opt raises: one clear line each, printed by the CLI without a traceback, never with a password."""

import re

# A URL's userinfo password (greedy up to the last '@' of the URL, so an unencoded '@' in the password is hidden
# too) and `password=` style parameters (libpq's `?password=`, `sslpassword=`, DSN `password=...`).
_URL_PASSWORD = re.compile(r"(?P<pre>\b[A-Za-z][\w+.-]*://[^\s:/?#@'\"]*:)[^'\"\n]*@")
_PARAM_PASSWORD = re.compile(r"(?i)(?P<pre>\b(?:ssl)?(?:password|passwd|pwd)\s*=\s*)[^&\s'\";]+")


def hide_passwords(text: str) -> str:
    """`text` with every password in a URL (userinfo or a `password=` parameter) replaced by `***`."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['pre']}***@", text)
    return _PARAM_PASSWORD.sub(lambda m: f"{m['pre']}***", text)


class YoloOptError(Exception):
    """Base class: a user-facing error whose message names the fix (passwords hidden wherever it is shown)."""

    def __str__(self) -> str:
        return hide_passwords(super().__str__())


class ConfigError(YoloOptError):
    """Bad or unknown argument."""


class ModelError(YoloOptError):
    """Missing, corrupt or unsupported model file."""


class UntrustedCheckpoint(ModelError):
    """A checkpoint holds objects outside the allow-list; unpickling it could run code (opt in: YOLO_OPT_TRUST=1)."""


class DataError(YoloOptError):
    """Missing or malformed dataset."""


class PruneError(YoloOptError):
    """Pruning cannot be done as asked (unreachable target, unsupported layer)."""


class DeployError(YoloOptError):
    """Export, quantization or engine build cannot be done here (missing runtime, accuracy bound not met)."""


class TensorRTMissing(DeployError):
    """TensorRT is not installed on this machine (build the engine on the device from the bundle)."""


class OpenVINOMissing(DeployError):
    """OpenVINO or NNCF is not installed (they are the optional extra `yolo-opt[openvino]`)."""


class StorageError(YoloOptError):
    """The Optuna storage URL is malformed, unreachable, or its driver is missing."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's text for a one-line message, shortened at a word boundary (never mid-word),
    with every password hidden (a driver's error may echo its URL)."""
    text = hide_passwords(_ANSI.sub("", str(error))).strip()  # Ultralytics colours its messages
    line = text.splitlines()[0].strip() if text else type(error).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return f"{cut} ..."
