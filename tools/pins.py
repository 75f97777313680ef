"""Write constraints.txt: the exact versions installed now of everything `yolo-opt[dev]` needs (the closure of its
requirements), i.e. the set a passing CI run tested. How to bump the pins (docs/development.md, "Tested versions,
drift and pins"):

    pip install -U -e ".[dev]"          # the newest versions pyproject's ranges allow
    python -m pytest -q                 # the suite passes with them
    python tools/pins.py                # then commit constraints.txt
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
HEADER = """# The exact versions CI passed with (tools/pins.py writes this file from a passing environment).
# pyproject.toml keeps ranges; install what was tested with: pip install -e ".[dev]" -c constraints.txt
# .ci/run also smoke-tests the newest versions the ranges allow (tools/drift.py) and warns when they break.
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = "yolo-opt", extras: tuple[str, ...] = ("dev",)) -> dict[str, str]:
    """{distribution: installed version} of every requirement reachable from `root[extras]` in this environment."""
    seen: dict[str, str] = {}
    todo = [(root, set(extras))]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement for another platform
        key = _norm(dist.metadata["Name"])
        if key in seen and not wanted:
            continue
        seen[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            env = {"extra": next(iter(wanted), "")}
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted or {""}) or \
                    req.marker.evaluate(env):
                if _norm(req.name) not in seen:
                    todo.append((req.name, set(req.extras)))
    seen.pop(_norm(root), None)
    return dict(sorted(seen.items()))


def main() -> None:
    pins = closure()
    text = HEADER + "".join(f"{name}=={version}\n" for name, version in pins.items())
    out = ROOT / "constraints.txt"
    out.write_text(text)
    print(f"{out}: {len(pins)} pins", file=sys.stderr)


if __name__ == "__main__":
    main()
