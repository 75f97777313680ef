"""Packaging: the top-level recipes/ is the recipes' single source, and an installed yolo-opt finds them, from a wheel
in a fresh venv and from an editable install alike.

The installs run in throwaway venvs made with --system-site-packages (torch, Ultralytics and the rest come from the
environment running the tests) and without pip of their own (this interpreter's pip installs into them with
`--python`). Their python runs outside any checkout, without PYTHONPATH, and each test asserts that `yolo_opt` was
imported from the venv's own install: a venv's site-packages precede the system's on sys.path, and its .pth files
(an editable install's path entry or finder) are processed before the system's, so an editable yolo-opt installed
in the system site-packages (CI's `pip install -e .`) does not shadow it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# what a build reads: the package, the recipes, and the metadata files pyproject.toml names
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "yolo_opt", "recipes")
PROBE = """
import json, yolo_opt
from yolo_opt.pipeline.recipes import RECIPES_DIR, available_recipes, load_recipe
recipe = load_recipe("cpu-onnx")
print(json.dumps({"file": yolo_opt.__file__, "dir": str(RECIPES_DIR), "names": available_recipes(),
                  "name": recipe.name, "raw": recipe.raw}))
"""


def _copy_sources(dest: Path) -> Path:
    """The build inputs copied out of the checkout, so that a build writes build/ and *.egg-info there, not here."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], check=True)
    return path / "bin" / "python"


def _pip(python: Path, *args: str, cwd: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation",
           "--no-index", "-q", *args]
    subprocess.run(cmd, check=True, cwd=cwd, env=_clean_env())


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}}
    env["YOLO_OFFLINE"] = "1"
    return env


def _probe(python: Path, cwd: Path) -> dict:
    """Resolve `recipe=cpu-onnx` with the venv's python, from `cwd` (outside any checkout), without PYTHONPATH."""
    cwd.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([str(python), "-c", PROBE], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _expected_cpu_onnx() -> dict:
    return yaml.safe_load((ROOT / "recipes" / "cpu-onnx.yaml").read_text())


def test_recipes_live_at_the_top_level_only():
    from yolo_opt.pipeline.recipes import RECIPES_DIR, available_recipes

    assert {p.stem for p in (ROOT / "recipes").glob("*.yaml")} >= {"cpu-onnx", "jetson-int8", "intel-openvino",
                                                                      "accuracy-first"}
    assert not list((ROOT / "yolo_opt").rglob("*.yaml")), "recipes belong in the top-level recipes/ only"
    if Path(__import__("yolo_opt").__file__).resolve().parents[1] == ROOT:  # running from this checkout
        assert RECIPES_DIR == ROOT / "recipes"
        assert available_recipes() == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))


def test_pyproject_lists_every_package():
    """packages is a list (the recipes' folder mapping rules out packages.find): it must name every package."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "yolo_opt").rglob("__init__.py")}
    assert set(cfg["packages"]) == on_disk | {"yolo_opt.recipes"}
    assert cfg["package-dir"] == {"yolo_opt.recipes": "recipes"}
    assert cfg["package-data"]["yolo_opt.recipes"] == ["*.yaml"]


def test_wheel_in_a_fresh_venv_finds_cpu_onnx(tmp_path):
    src = _copy_sources(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(src)], check=True, env=_clean_env())
    wheel = next(dist.glob("yolo_opt-*.whl"))
    python = _venv(tmp_path / "venv")
    _pip(python, str(wheel))
    shutil.rmtree(src)  # nothing of the sources is left to find: the recipes must come from the wheel
    got = _probe(python, tmp_path / "elsewhere")
    site = Path(got["file"]).resolve()
    assert (tmp_path / "venv").resolve() in site.parents, f"yolo_opt imported from {site}, not the venv's wheel"
    assert Path(got["dir"]) == site.parent / "recipes"
    assert got["names"] == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
    assert got["name"] == "cpu-onnx" and got["raw"] == _expected_cpu_onnx()


def test_editable_install_finds_cpu_onnx(tmp_path):
    src = _copy_sources(tmp_path / "src")
    python = _venv(tmp_path / "venv")
    _pip(python, "-e", str(src))
    got = _probe(python, tmp_path / "elsewhere")
    assert Path(got["file"]).resolve() == (src / "yolo_opt" / "__init__.py").resolve(), got["file"]
    assert Path(got["dir"]).resolve() == (src / "recipes").resolve()
    assert got["name"] == "cpu-onnx" and got["raw"] == _expected_cpu_onnx()

