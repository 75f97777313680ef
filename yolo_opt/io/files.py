"""Atomic output: files and folders are written under a temporary name next to the destination, then renamed into
place; a folder is replaced only when it is an earlier yolo-opt output of the same kind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success, delete it on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions a plain write would
        os.replace(tmp, path)
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
    from yolo_opt.errors import ConfigError

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
    import shutil
    import signal

    from yolo_opt.errors import ConfigError

    folder = Path(folder)
    if owned_folder(folder, kind) and not replace:
        raise ConfigError(f"out={folder} already holds a yolo-opt {kind}; choose another out= or delete it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old = tmp.with_name(tmp.name + ".old")  # as unique as the temporary folder: never a name of the user's
    try:
        yield tmp
        (tmp / MARKER).write_text(kind + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the permissions a plain mkdir would
        ours = owned_folder(folder, kind)  # again: something may have appeared there meanwhile
        if ours and not replace:
            raise ConfigError(f"out={folder} already holds a yolo-opt {kind}; choose another out= or delete it")
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
