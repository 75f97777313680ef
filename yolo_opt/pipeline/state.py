"""A run folder of `yolo-opt optimize`: its exclusive lock and its `state.json` (stages done, artefacts)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, first_line
from yolo_opt.io.files import atomic_write_bytes


class RunLock:
    """An exclusive lock on a run folder (`.lock`, holding the owner's pid), so two runs never share one folder.

    An OS file lock (`flock`): the kernel drops it when its process ends however it ends, so the lock of a
    killed run is taken over by the next one, and a recycled pid cannot keep a folder locked.
    """

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.file = None

    def __enter__(self) -> RunLock:
        import fcntl

        f = open(self.path, "a+")  # noqa: SIM115 (held open for the whole run)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise ConfigError(f"run folder {self.path.parent} is in use by another yolo-opt run (pid {owner}); wait "
                              "for it to finish or pass another name=") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()  # releases the lock; the file stays (removing it would race with a waiting run)


STATE_FILE = "state.json"


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"run state file {path} is unreadable or corrupt ({first_line(e, 80)}); delete its folder to "
                          "start over, or pass another name=") from None
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict) or \
            not isinstance(state.get("artefacts"), dict):
        raise ConfigError(f"run state file {path} is not a yolo-opt run state; delete its folder to start over, or "
                          "pass another name=")
    return state


def _ours_to_start(folder: Path) -> bool:
    """Whether a folder without a state file may become a run: nothing in it but our lock and temporaries (a run
    killed before its first state write)."""
    from yolo_opt.io.files import _TMP_NAME

    return all(p.name == ".lock" or _TMP_NAME.match(p.name) for p in folder.iterdir())


def check_run_folder(folder: Path, fingerprint: dict[str, str], recipe: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse, before anything is written there, a folder that is not this run's: a file, a folder of the user's
    (no state file), a corrupt state file, or a run made for another model, dataset or recipe.

    Returns:
        The run's state to continue, or None for a new run.
    """
    if not folder.exists():
        return None
    if not folder.is_dir():
        raise ConfigError(f"run folder {folder} is an existing file; pass another name=")
    path = folder / STATE_FILE
    if not path.exists():
        if _ours_to_start(folder):
            return None
        raise ConfigError(f"{folder} exists and is not a yolo-opt run (no {STATE_FILE}); pass another name= (nothing "
                          "of a folder yolo-opt did not make is touched)")
    state = _read_state(path)
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(f"run folder {folder} was made for another model or dataset; pass a new name= or delete it")
    if state.get("recipe") != json.loads(json.dumps(recipe, default=str)):
        raise ConfigError(f"run folder {folder} was made with other recipe keys; pass a new name= or delete it")
    return state


class Run:
    """A run folder and its `state.json`."""

    def __init__(self, folder: Path, fingerprint: dict[str, str], recipe: dict[str, Any], data: Path):
        """Open (or start) the run; refuse a folder made for another model, dataset or recipe."""
        self.folder = folder
        self.data = str(data)  # the dataset every stage trains, calibrates and validates on
        self.state_path = folder / STATE_FILE
        state = check_run_folder(folder, fingerprint, recipe)  # again under the lock: it may have changed meanwhile
        self.state = state or {"fingerprint": fingerprint, "recipe": recipe, "stages": {}, "artefacts": {}}
        self.state["recipe"] = recipe
        self.save()

    def save(self) -> None:
        """Write state.json atomically."""
        atomic_write_bytes(self.state_path, json.dumps(self.state, indent=1, default=str).encode())

    def done(self, stage: str) -> bool:
        """Whether `stage` finished in an earlier invocation."""
        return self.state["stages"].get(stage, {}).get("status") == "done"

    def record(self, stage: str, artefacts: dict[str, str], **info: Any) -> None:
        """Mark `stage` done with its artefacts (relative to the run folder)."""
        rel = {k: str(Path(v).resolve().relative_to(self.folder.resolve())) for k, v in artefacts.items()}
        self.state["stages"][stage] = {"status": "done", "artefacts": rel, **info}
        self.state["artefacts"].update(rel)
        self.save()

    def path(self, kind: str) -> Path | None:
        """Latest artefact of a kind (pt, onnx, int8_onnx, ...)."""
        rel = self.state["artefacts"].get(kind)
        return self.folder / rel if rel else None
