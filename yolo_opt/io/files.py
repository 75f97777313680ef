"""Atomic output: files and folders are written under a temporary name next to the destination, then renamed into
place; a folder is replaced only when it is an earlier yolo-opt output of the same kind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from yolo_opt.errors import ConfigError

# Our temporaries are hidden and carry our tag, the writer's host (4 hex digits of a hash) and pid, e.g.
# `.model.yolo-opt-3fa2-1234.k2j4x9ab.tmp.pt` or `.model_int8.yolo-opt-3fa2-1234.x8f2kq0z/`: an interrupted run
# (SIGINT, SIGTERM) removes its own, and those of a run killed without a chance to (SIGKILL, power loss) are removed
# by the next write into the same folder once that pid is gone from the same host (a folder shared with other
# machines or containers keeps theirs). Nothing else is ever removed.
TMP_TAG = "yolo-opt"
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]
_TMP_NAME = re.compile(rf"^\..+\.{TMP_TAG}-(?P<host>[0-9a-f]{{4}})-(?P<pid>\d+)\.[A-Za-z0-9_]{{8}}(\..*)?$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove yolo-opt temporaries in `folder` whose writer is dead (only names of our pattern); returns them."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP_NAME.match(p.name)
        if m is None or m["host"] != HOST or _pid_alive(int(m["pid"])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _prefix(path: Path) -> str:
    return f".{path.stem if path.suffix else path.name}.{TMP_TAG}-{HOST}-{os.getpid()}."


def _unwritable(path: Path, e: OSError) -> ConfigError:
    return ConfigError(f"cannot write {path}: {e.strerror or e}; choose a writable location for the output")


@contextlib.contextmanager
def hints_outside(folder: str | Path) -> Iterator[None]:
    """Ultralytics' exporter ends with 'Results saved to', 'Predict:' and 'Validate:' lines that name the file it
    wrote; ours are written in a temporary `folder` and moved, so those lines would name a path that no longer
    exists: while this context is open, lines naming `folder` are left out of its log."""
    import logging

    from ultralytics.utils import LOGGER

    names = {str(Path(folder)), str(Path(folder).resolve())}

    class Hints(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            message = record.getMessage()
            if any(n in message for n in names):
                record.msg, record.args = "\n".join(ln for ln in message.splitlines()
                                                     if not any(n in ln for n in names)), ()
            return True

    hints = Hints()
    LOGGER.addFilter(hints)
    try:
        yield
    finally:
        LOGGER.removeFilter(hints)


def temporary_dir(dest: str | Path) -> Path:
    """A new hidden temporary folder next to `dest` (same file system: its contents can be renamed into place)."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(dest.parent)
        # the whole name: Ultralytics tells formats by folder names (`*_openvino_model`), and a dot is no suffix here
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{TMP_TAG}-{HOST}-{os.getpid()}.", dir=dest.parent))
    except OSError as e:
        raise _unwritable(dest, e) from e


def check_output(path: str | Path, inputs: Iterable[str | Path] = (), folder: bool = False, key: str = "out",
                 example: str = "model.onnx") -> Path:
    """Refuse, before any work, an output we must not or cannot write; nothing is created.

    A file output may not be an existing folder, a folder output not an existing file; neither may be one of
    `inputs` (an input is never overwritten), and the nearest existing folder (above it) must be writable.
    """
    path = Path(path)
    long = next((part for part in path.parts if len(os.fsencode(part)) > 255), None)  # NAME_MAX of Linux, macOS
    if long is not None:
        raise ConfigError(f"{key}= names a file or folder of {len(os.fsencode(long))} bytes; the file system allows "
                          "255: choose a shorter name")
    if not folder and path.is_dir():
        raise ConfigError(f"{key}={path} is an existing folder; name the file to write, e.g. {key}={path / example}")
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is an existing file, not a folder; choose another {key}=")
    for src in inputs:
        src = Path(str(src))
        if (src.exists() and path.exists() and os.path.samefile(src, path)) or src.resolve() == path.resolve():
            raise ConfigError(f"{key}={path} is the input {src}; choose another {key}= (inputs are never overwritten)")
    parent = path.absolute() if folder else path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}={path}: {parent} is a file, not a folder; choose another {key}=")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: folder {parent} is not writable; choose a writable location")
    return path


@contextlib.contextmanager
def made_folder(folder: str | Path) -> Iterator[Path]:
    """Make `folder` (and its missing parents) for the block; a refusal (`YoloOptError`) in the block removes what
    was made here, so a refused command leaves no folder behind. An existing folder is never removed."""
    from yolo_opt.errors import YoloOptError

    folder = Path(folder)
    made = folder.absolute()
    while not made.parent.exists():
        made = made.parent
    made = None if folder.exists() else made
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(folder, e) from e
    try:
        yield folder
    except YoloOptError:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success, delete it on failure."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is an existing folder; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:
        raise _unwritable(path, e) from e
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions a plain write would
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _unwritable(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write `payload` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


# The file that marks a folder as written by yolo-opt (its text: the kind, e.g. "bundle"), so that an output folder
# is replaced only when it is our own.
MARKER = ".yolo-opt"


def owned_folder(folder: str | Path, kind: str) -> bool:
    """Whether `folder` holds an earlier yolo-opt output of `kind` (it may be replaced); False when absent or empty.

    Raises:
        ConfigError: `folder` is a file, or a non-empty folder yolo-opt did not write: it is never touched.
    """
    folder = Path(folder)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise ConfigError(f"out={folder} exists and is not a folder; choose another out=")
    marker = folder / MARKER
    if marker.is_file() and marker.read_text().strip() == kind:
        return True
    if any(folder.iterdir()):
        raise ConfigError(f"out={folder} is not empty and not a yolo-opt {kind}; choose another out= or empty it")
    return False


@contextlib.contextmanager
def atomic_folder(folder: str | Path, kind: str, replace: bool = True) -> Iterator[Path]:
    """Yield a new hidden folder next to `folder` to fill; on success it becomes `folder`, on failure it is removed.

    `folder` may be absent, empty, or (with `replace`) an earlier yolo-opt output of the same `kind`, which is
    swapped out only once the new one is complete; anything else raises ConfigError before and after the work.
    The swap blocks SIGINT/SIGTERM, so a kill leaves the old folder or the new one, never neither.
    """
    import signal

    folder = Path(folder)

    def check_replaceable() -> None:
        if owned_folder(folder, kind) and not replace:
            raise ConfigError(f"out={folder} already holds a yolo-opt {kind}; choose another out= or delete it")

    check_replaceable()
    tmp = temporary_dir(folder)  # tagged: a killed run's leftover is removed by the next write here
    old = tmp.with_name(tmp.name + ".old")  # as unique as the temporary folder: never a name of the user's
    try:
        yield tmp
        (tmp / MARKER).write_text(kind + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the permissions a plain mkdir would
        check_replaceable()  # again: something may have appeared there meanwhile
        blocked = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            if folder.exists():
                os.replace(folder, old)  # an empty folder or our own: nothing of the user's is lost
            os.replace(tmp, folder)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
