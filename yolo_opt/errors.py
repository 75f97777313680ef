"""Errors yolo-opt raises: one clear line each, printed by the CLI without a traceback."""

import re


class YoloOptError(Exception):
    """Base class: a user-facing error whose message names the fix."""


class ConfigError(YoloOptError):
    """Bad or unknown argument."""


class ModelError(YoloOptError):
    """Missing, corrupt or unsupported model file."""


class DataError(YoloOptError):
    """Missing or malformed dataset."""


class PruneError(YoloOptError):
    """Pruning cannot be done as asked (unreachable target, unsupported layer)."""


class DeployError(YoloOptError):
    """Export, quantization or engine build cannot be done here (missing runtime, accuracy bound not met)."""


class TensorRTMissing(DeployError):
    """TensorRT is not installed on this machine (build the engine on the device from the bundle)."""


class StorageError(YoloOptError):
    """The Optuna storage URL is malformed, unreachable, or its driver is missing."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's text for a one-line message, shortened at a word boundary (never mid-word)."""
    text = _ANSI.sub("", str(error)).strip()  # Ultralytics colours its messages
    line = text.splitlines()[0].strip() if text else type(error).__name__
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return f"{cut} ..."
