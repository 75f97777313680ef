"""A run folder of `yolo-opt optimize`: its exclusive lock and its `state.json` (stages done, artefacts)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError
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


class Run:
    """A run folder and its `state.json`."""

    def __init__(self, folder: Path, fingerprint: dict[str, str], recipe: dict[str, Any], data: Path):
        """Open (or start) the run; refuse a folder made for another model, dataset or recipe."""
        self.folder = folder
        self.data = str(data)  # the dataset every stage trains, calibrates and validates on
        self.state_path = folder / "state.json"
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
            if self.state.get("fingerprint") != fingerprint:
                raise ConfigError(
                    f"run folder {folder} was made for another model or dataset; pass a new name= or delete it"
                )
            if self.state.get("recipe") != json.loads(json.dumps(recipe, default=str)):
                raise ConfigError(
                    f"run folder {folder} was made with other recipe keys; pass a new name= or delete it"
                )
        else:
            self.state = {"fingerprint": fingerprint, "recipe": recipe, "stages": {}, "artefacts": {}}
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
