"""Drift check: a short smoke run of yolo-opt on the *newest* versions pyproject's ranges allow, in a separate
virtual environment, so that an Ultralytics (or other) release that breaks yolo-opt is seen before users see it.

    python tools/drift.py [--venv DIR] [--strict]

It never fails on its own account: it prints a warning naming each package whose newest allowed version differs
from constraints.txt and the step that broke; `--strict` makes that exit 1. CI (.ci/run) runs it after the suite,
which tests the pinned set (constraints.txt) and fails CI. The venv sees this machine's packages
(`--system-site-packages`) and upgrades what the ranges allow, except torch/torchvision (several GB; the machine's
build is the one tested).

Steps (tiny generated data at 64 px, a YOLO26n built from its yaml): prune, a 1-epoch `train prune_target=`, an INT8
export, a 1-trial `tune` with a relative project, and one `optimize` stage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"torch", "torchvision"}  # CUDA builds of several GB: the machine's are kept
STEPS = [
    ("data", ["data", "out=data", "seed=0", "n_train=16", "n_val=8", "imgsz=64"]),
    ("prune", ["prune", "model=yolo26n.pt", "prune=0.5", "out=pruned.pt", "imgsz=64"]),
    ("train prune_target", ["train", "model=yolo26n.pt", "data=data/data.yaml", "epochs=1", "imgsz=64", "batch=8",
                            "workers=0", "plots=False", "prune_target=0.5", "project=runs/smoke", "name=train"]),
    ("export int8", ["export", "model=pruned.pt", "format=onnx", "int8=True", "data=data/data.yaml", "imgsz=64",
                     "calib_images=4", "out=pruned_int8.onnx"]),
    ("tune", ["tune", "model=yolo26n.pt", "data=data/data.yaml", "trials=1", "epochs=1", "imgsz=64", "batch=8",
              "workers=0", "prune=0.25", "project=runs/tune", "study=smoke"]),
    ("optimize", ["optimize", "model=yolo26n.pt", "data=data/data.yaml", "stages=[baseline,export]", "imgsz=64",
                  "project=runs/opt", "name=smoke"]),
]
CHECKPOINT = ("from ultralytics.nn.tasks import DetectionModel\nfrom yolo_opt.data import CLASS_NAMES\n"
              "from yolo_opt.io.checkpoint import save_model\n"
              "m = DetectionModel('yolo26n.yaml', nc=len(CLASS_NAMES), verbose=False)\n"
              "m.names = dict(enumerate(CLASS_NAMES))\n"
              "save_model(m, 'yolo26n.pt', train_args={'imgsz': 64, 'task': 'detect'})\n")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]


def requirements() -> list[str]:
    """The direct requirements of yolo-opt[dev] from pyproject.toml, as ranges."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [r.split("#")[0].strip() for r in reqs if _name(r).lower() not in SKIP]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out


def installed(python: str) -> dict[str, str]:
    code = ("import json, re, importlib.metadata as m\n"
            "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()}))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def warn(text: str) -> None:
    print(f"yolo-opt drift warning: {text}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "yolo-opt-drift"))
    ap.add_argument("--strict", action="store_true", help="exit 1 when the newest versions break a step")
    ap.add_argument("--always", action="store_true", help="run the steps even when nothing drifted (checks them)")
    args = ap.parse_args()

    venv = Path(args.venv)
    python = str(venv / "bin" / "python")
    try:
        if not Path(python).exists():
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "--upgrade-strategy", "only-if-needed",
                        *requirements()], check=True, capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as e:
        warn(f"could not install the newest allowed versions ({str(e).strip().splitlines()[-1][:200]}); not checked")
        return 0
    pinned, now = pins(), installed(python)
    drift = {name: (pinned[name], now[name]) for name in pinned if name in now and now[name] != pinned[name]}
    if not drift and not args.always:
        print("yolo-opt drift: the newest versions the ranges allow are the pinned ones (constraints.txt)")
        return 0
    changed = ", ".join(f"{n} {new} (pinned {old})" for n, (old, new) in sorted(drift.items())) or "the pinned set"
    print(f"yolo-opt drift: smoke run with {changed}", flush=True)
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1"}
    broke = []
    with tempfile.TemporaryDirectory(prefix="yolo-opt-drift.") as work:
        setup = subprocess.run([python, "-c", CHECKPOINT], cwd=work, env=env, capture_output=True, text=True)
        steps = STEPS if setup.returncode == 0 else []
        if setup.returncode:
            broke.append(("building a YOLO26n checkpoint", setup.stderr))
        for step, argv in steps:
            r = subprocess.run([python, "-m", "yolo_opt.cli", *argv], cwd=work, env=env, capture_output=True,
                               text=True, timeout=1800)
            print(f"  {step}: {'ok' if r.returncode == 0 else f'FAILED (exit {r.returncode})'}", flush=True)
            if r.returncode:
                broke.append((step, r.stderr))
    for step, stderr in broke:
        last = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "no output")
        warn(f"'{step}' fails with {changed}: {last[:300]}; pin the working versions (constraints.txt) and fix "
             "yolo-opt before widening pyproject's ranges")
    if not broke:
        print(f"yolo-opt drift: every step passes with {changed}" + ("; bump the pins (python tools/pins.py)" if drift
                                                                     else ""))
    return 1 if broke and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
