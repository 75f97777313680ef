#!/usr/bin/env python3
"""Extract the names the real TensorRT Python bindings export, per version, into JSON fixtures.

    python tools/tensorrt_api.py 8.6.1 10.3.0 10.16.1.11 11.4.0.106 --out tests/fixtures/tensorrt

For each version this downloads the bindings wheel from PyPI (`tensorrt-bindings` for 8.x, `tensorrt-cu12-bindings`
for 10.x and later; about 1 MB, no GPU needed), imports its compiled module and writes what it registers: module
attributes, enum members and class attributes/methods.

How the bindings are imported without TensorRT: the compiled module (`tensorrt_bindings/tensorrt.so`) links
against libnvinfer, libnvonnxparser and libnvinfer_plugin, which live in the `tensorrt-*-libs` wheels. PyPI only has
15 kB `wheel_stub` sdists for those (they download the real wheel from pypi.nvidia.com at install time, which CI and
this project's machines cannot reach), so the libraries are replaced by stubs: one small shared library, compiled
here with `cc`, that defines the handful of C entry points the bindings link to (createInferBuilder_INTERNAL,
getPluginRegistry, ...; read with `nm -D --undefined-only`) as functions returning NULL. Importing the module only
runs pybind11's registration code, which lives entirely in the bindings, so every class, enum value and method name
it exports is the real one; nothing calls the stubs. Needs Linux x86-64, pip, cc, nm and readelf.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Introspection, run in a fresh interpreter with the stubs on LD_LIBRARY_PATH.
INTROSPECT = r"""
import inspect, json, sys
sys.path.insert(0, sys.argv[1])
import tensorrt_bindings as trt
out = {"version": trt.__version__, "module": [], "enums": {}, "classes": {}}
for name in sorted(dir(trt)):
    if name.startswith("_"):
        continue
    obj = getattr(trt, name)
    out["module"].append(name)
    if inspect.isclass(obj):
        members = getattr(obj, "__members__", None)
        if isinstance(members, dict) and members:  # pybind11 enum
            out["enums"][name] = sorted(members)
        else:
            out["classes"][name] = sorted(a for a in dir(obj) if not a.startswith("_"))
print(json.dumps(out))
"""

STD_LIBS = ("libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libstdc++.so.6",
            "libgcc_s.so.1")


def package_for(version: str) -> str:
    """PyPI name of the bindings wheel: 8.6 shipped `tensorrt-bindings`, 10.x and later `tensorrt-cu12-bindings`."""
    return "tensorrt-bindings" if int(version.split(".")[0]) < 10 else "tensorrt-cu12-bindings"


def download(version: str, dest: Path) -> Path:
    pkg = package_for(version)
    tag = f"{sys.version_info.major}{sys.version_info.minor}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", tag,
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux2014_x86_64", "-d", str(dest), "--progress-bar", "off", f"{pkg}=={version}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wheels = sorted(dest.glob(f"{pkg.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"no wheel for {pkg}=={version} in {dest}")
    return wheels[0]


def _undefined_symbols(so: Path) -> list[str]:
    out = subprocess.run(["nm", "-D", "--undefined-only", str(so)], check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U" and "@" not in parts[1]:  # versioned ones come from glibc/libstdc++
            syms.append(parts[1])
    return syms


def _needed(so: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(so)], check=True, capture_output=True, text=True).stdout
    return [ln.split("[", 1)[1].rstrip("]") for ln in out.splitlines() if "(NEEDED)" in ln]


def make_stubs(so: Path, stub_dir: Path) -> list[str]:
    """Compile one stub library for the TensorRT libraries `so` needs; return the symbols it stubs."""
    available = [ctypes.CDLL(None)]
    for lib in STD_LIBS:
        try:
            available.append(ctypes.CDLL(lib))
        except OSError:
            pass
    syms = [s for s in _undefined_symbols(so) if not any(hasattr(lib, s) for lib in available)]
    src = stub_dir / "stub.c"
    src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in syms))
    stub = stub_dir / "libtrtstub.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(stub), str(src)], check=True)
    for lib in _needed(so):
        if lib.startswith(("libnvinfer", "libnvonnxparser", "libnvparsers")):
            (stub_dir / lib).write_bytes(stub.read_bytes())
    return syms


def extract(version: str, work: Path) -> dict:
    wheel = download(version, work)
    root = work / f"x-{version}"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)
    so = next(root.glob("tensorrt_bindings/tensorrt*.so"))
    stub_dir = work / f"stubs-{version}"
    stub_dir.mkdir()
    stubbed = make_stubs(so, stub_dir)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{stub_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    res = subprocess.run([sys.executable, "-c", INTROSPECT, str(root)], capture_output=True, text=True, env=env,
                         timeout=120)
    if res.returncode != 0:
        raise SystemExit(f"importing the {version} bindings failed:\n{res.stderr[-2000:]}")
    api = json.loads(res.stdout.strip().splitlines()[-1])
    api["source"] = {
        "wheel": wheel.name,
        "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "method": "real bindings module imported with stub native libraries (see tools/tensorrt_api.py)",
        "stubbed_symbols": stubbed,
    }
    return api


def dump(api: dict) -> str:
    """JSON with one line per class/enum: small diffs between versions, readable in review."""
    lines = ["{"]
    head = {k: api[k] for k in ("version", "source")}
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append(f'  "module": {json.dumps(api["module"])},')
    for section in ("enums", "classes"):
        lines.append(f'  "{section}": {{')
        items = sorted(api[section].items())
        for i, (name, members) in enumerate(items):
            lines.append(f"    {json.dumps(name)}: {json.dumps(members)}{',' if i < len(items) - 1 else ''}")
        lines.append("  }" + ("," if section == "enums" else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", nargs="+", help="exact versions, e.g. 8.6.1 10.3.0 10.16.1.11 11.4.0.106")
    ap.add_argument("--out", default="tests/fixtures/tensorrt", help="folder for <version>.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trt-api.") as tmp:
        for version in args.versions:
            work = Path(tmp) / version
            work.mkdir()
            api = extract(version, work)
            path = out / f"{version}.json"
            path.write_text(dump(api))
            n = sum(len(v) for v in api["classes"].values()) + sum(len(v) for v in api["enums"].values())
            print(f"{path}: TensorRT {api['version']}, {len(api['module'])} module names, {n} members")


if __name__ == "__main__":
    main()
