"""No code from a checkpoint, no lost or replaced files: safe loading and its opt-in, bundle folders, INT8 export.

Every CLI case runs the real CLI in a subprocess: exit 2, one line, no traceback, nothing written or deleted.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from tests.conftest import IMGSZ, run_cli, run_python


def _clean_error(result, *needles: str) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    err = result.stderr.strip()
    assert err.startswith("yolo-opt: error:") and len(err.splitlines()) == 1, err
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in err, err
    return err


class _Payload:
    """Unpickling this writes the marker file: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.fixture()
def evil(tmp_path):
    """A torch.save checkpoint whose model is the payload, and the marker the payload would write."""
    import torch

    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(marker), "train_args": {}}, path)
    return path, marker


@pytest.mark.parametrize("mode", ["prune", "val", "train", "benchmark"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, evil, tiny_data, mode):
    path, marker = evil
    args = {
        "prune": ("prune", f"model={path}", "prune=0.5", f"out={tmp_path / 'out.pt'}"),
        "val": ("val", f"model={path}", f"data={tiny_data}", f"imgsz={IMGSZ}"),
        "train": ("train", f"model={path}", "resume"),  # Ultralytics' resume would unpickle it: checked first
        "benchmark": ("benchmark", f"model={path}", f"data={tiny_data}", f"imgsz={IMGSZ}", f"project={tmp_path}"),
    }[mode]
    err = _clean_error(run_cli(*args, cwd=tmp_path), "was not loaded", "builtins.exec", "YOLO_OPT_TRUST=1")
    assert "could run code" in err
    assert not marker.exists(), "the pickled payload ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def test_legacy_format_payload_is_refused(tmp_path):
    import torch

    marker = tmp_path / "payload-ran"
    path = tmp_path / "legacy.pt"
    torch.save({"model": _Payload(marker)}, path, _use_new_zipfile_serialization=False)
    _clean_error(run_cli("prune", f"model={path}", "prune=0.5", f"out={tmp_path / 'o.pt'}"), "holds 'exec'",
                 "YOLO_OPT_TRUST=1")
    assert not marker.exists() and not (tmp_path / "o.pt").exists()


def test_opt_in_runs_the_pickle(tmp_path, evil, monkeypatch):
    """YOLO_OPT_TRUST=1 is full pickle: the payload runs (then the file is refused as no Ultralytics model)."""
    path, marker = evil
    monkeypatch.setenv("YOLO_OPT_TRUST", "1")
    _clean_error(run_cli("prune", f"model={path}", "prune=0.5", f"out={tmp_path / 'o.pt'}"), "not an Ultralytics")
    assert marker.read_text() == "ran"
    monkeypatch.setenv("YOLO_OPT_TRUST", "maybe")
    _clean_error(run_cli("prune", f"model={path}", "prune=0.5", f"out={tmp_path / 'o.pt'}"), "YOLO_OPT_TRUST=")
    assert not (tmp_path / "o.pt").exists()


def test_trusted_pruned_and_plain_checkpoints_load_safely(tmp_path, v8_checkpoint):
    """Ultralytics and yolo-opt (split twins) checkpoints need no opt-in; a trusted run loads them the same."""
    out = tmp_path / "pruned.pt"
    r = run_cli("prune", f"model={v8_checkpoint}", "prune=0.3", f"out={out}", f"imgsz={IMGSZ}")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_python(f"from yolo_opt.io.checkpoint import load_model; from ultralytics.nn.tasks import torch_safe_load\n"
                   f"m = load_model({str(out)!r}); print(type(m).__name__)\n"
                   f"torch_safe_load({str(out)!r}, safe_only=True)  # Ultralytics' restricted loader knows our twins")
    assert r.returncode == 0 and "DetectionModel" in r.stdout, r.stderr[-3000:]


def test_ultralytics_loads_behind_ours_are_weights_only(tmp_path, evil, v8_checkpoint):
    """After yolo-opt's first load, Ultralytics' own loader (YOLO(path), trainers, validators, exporters) is in its
    restricted mode too: handed the payload directly, it refuses it without running it."""
    path, marker = evil
    r = run_python(f"from yolo_opt.io.checkpoint import load_model\nload_model({str(v8_checkpoint)!r})\n"
                   "from ultralytics import YOLO\n"
                   f"try:\n    YOLO({str(path)!r})\nexcept Exception as e:\n    print('refused', type(e).__name__)\n")
    assert r.returncode == 0 and "refused" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
    assert not marker.exists(), "Ultralytics unpickled the payload"


def test_non_ultralytics_and_corrupt_files(tmp_path):
    import torch

    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    err = _clean_error(run_cli("prune", f"model={plain}", "prune=0.5", f"out={tmp_path / 'o.pt'}"),
                       "is a Python pickle, not an Ultralytics checkpoint")
    assert "corrupt" not in err
    state = tmp_path / "state.pt"
    torch.save({"conv.weight": torch.zeros(2)}, state)
    err = _clean_error(run_cli("prune", f"model={state}", "prune=0.5", f"out={tmp_path / 'o.pt'}"),
                       "not an Ultralytics checkpoint", "conv.weight")
    assert "corrupt" not in err
    noise = tmp_path / "noise.pt"
    noise.write_bytes(os.urandom(4096))
    _clean_error(run_cli("prune", f"model={noise}", "prune=0.5", f"out={tmp_path / 'o.pt'}"), "corrupt")
    assert not (tmp_path / "o.pt").exists()


# ---------------------------------------------------------------------------------------------- output folders
def test_bundle_refuses_a_folder_of_the_users(tmp_path, v8_checkpoint, tiny_data):
    user = tmp_path / "u"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    _clean_error(run_cli("bundle", f"model={v8_checkpoint}", f"data={tiny_data}", f"out={user}", f"imgsz={IMGSZ}"),
                 "not empty and not a yolo-opt bundle")
    assert [p.name for p in user.iterdir()] == ["keep.txt"] and (user / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u"]  # no temporary folder left beside it


def test_atomic_folder_replaces_only_its_own_kind(tmp_path):
    from yolo_opt.errors import ConfigError
    from yolo_opt.io.files import atomic_folder

    out = tmp_path / "b"
    with atomic_folder(out, "bundle") as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_folder(out, "bundle") as tmp:  # a failure keeps the old one whole
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("export failed")
    assert (out / "a.txt").read_text() == "1"
    with atomic_folder(out, "bundle") as tmp:  # our own: replaced
        (tmp / "a.txt").write_text("2")
    assert (out / "a.txt").read_text() == "2"
    with pytest.raises(ConfigError, match="not a yolo-opt dataset"), atomic_folder(out, "dataset"):
        pass
    with pytest.raises(ConfigError, match="already holds"), atomic_folder(out, "bundle", replace=False):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_data_refuses_a_folder_of_the_users(tmp_path):
    user = tmp_path / "d"
    user.mkdir()
    (user / "keep.txt").write_text("x")
    _clean_error(run_cli("data", f"out={user}", "n_train=2", "n_val=1", "imgsz=64"), "not empty")
    assert [p.name for p in user.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_export_int8_writes_only_out(tmp_path, v8_checkpoint, tiny_data):
    """The FP32 ONNX is a step in a scratch folder: the model's (read-only) folder is not touched, an existing
    model.onnx there is kept, and the out= folder gets only the INT8 model."""
    src = tmp_path / "models"
    src.mkdir()
    model = src / "m.pt"
    model.write_bytes(v8_checkpoint.read_bytes())
    (src / "m.onnx").write_bytes(b"the user's own onnx")
    before = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    folder_mtime = src.stat().st_mtime_ns  # any file created or removed in the folder changes it
    src.chmod(0o555)
    out = tmp_path / "dist" / "m_int8.onnx"
    try:
        r = run_cli("export", f"model={model}", "format=onnx", "int8=True", f"data={tiny_data}", f"imgsz={IMGSZ}",
                    "calib_images=4", f"out={out}")
    finally:
        src.chmod(0o755)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == before and src.stat().st_mtime_ns == folder_mtime
    assert (src / "m.onnx").read_bytes() == b"the user's own onnx"
    assert [p.name for p in out.parent.iterdir()] == ["m_int8.onnx"]


# ---------------------------------------------------------------------------------------------- prune_native
def _pruned(cfg: str):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.prune.pruner import prune_model

    torch.manual_seed(0)
    net = DetectionModel(cfg, nc=len(CLASS_NAMES), verbose=False).eval()
    for m in net.modules():  # statistics as after training, so a misplaced channel would show in the outputs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return prune_model(net, 0.3, "l2", 8, False, IMGSZ)


def test_to_native_is_lossless_where_halves_are_equal():
    import copy

    import torch
    from ultralytics.nn.modules import C2PSA, C2f, C3k2

    from yolo_opt.prune.blocks import C2PSASplit, to_native

    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    for cfg, expect, native_types in (("yolov8n.yaml", (8, 0), {C2f}), ("yolo11n.yaml", (8, 1), {C3k2})):
        net = _pruned(cfg)
        native = copy.deepcopy(net)
        assert to_native(native) == expect  # yolo11n: C2PSA's bypass half was pruned, its attention half not
        assert {type(m) for m in native.modules() if isinstance(m, C2f)} == native_types
        assert sum(isinstance(m, C2PSASplit) for m in native.modules()) == expect[1]
        with torch.no_grad():
            torch.testing.assert_close(native(x)[0], net(x)[0], rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, C2PSA) for m in native.modules())


def test_prune_native_checkpoint_opens_in_plain_ultralytics_safe_mode(tmp_path, tiny_data):
    """prune_native=True: only Ultralytics classes, so Ultralytics alone (ULTRALYTICS_SAFE_LOAD=1, yolo-opt never
    imported) opens it; yolo-opt still fine-tunes it at its pruned shapes. The default twins are refused there."""
    from tests.conftest import make_checkpoint

    src = make_checkpoint("yolo11n.yaml", tmp_path / "v11.pt")
    native, twins = tmp_path / "native.pt", tmp_path / "twins.pt"
    for out, extra in ((native, ("prune_native=True",)), (twins, ())):
        r = run_cli("prune", f"model={src}", "prune=0.3", f"out={out}", f"imgsz={IMGSZ}", *extra)
        assert r.returncode == 0, r.stderr[-3000:]
    code = ("import os, sys; os.environ['ULTRALYTICS_SAFE_LOAD'] = '1'\n"
            "from ultralytics import YOLO\n"
            f"m = YOLO({str(native)!r}); m.predict(source=[__import__('numpy').zeros(({IMGSZ}, {IMGSZ}, 3), 'uint8')], "
            f"imgsz={IMGSZ}, verbose=False)\n"
            "print('params', sum(p.numel() for p in m.model.parameters()), 'yolo_opt' in sys.modules)\n"
            f"try:\n    YOLO({str(twins)!r})\nexcept Exception as e:\n    print('twins refused')\n")
    r = run_python(code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    params, imported = r.stdout.split("params ")[1].split()[:2]
    assert imported == "False" and "twins refused" in r.stdout
    r = run_cli("train", f"model={native}", f"data={tiny_data}", "epochs=1", f"imgsz={IMGSZ}", "batch=8", "workers=0",
                "plots=False", "warmup_epochs=0", f"project={tmp_path}", "name=ft", "exist_ok=True")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_python(f"from ultralytics import YOLO; print(sum(p.numel() for p in YOLO({str(tmp_path / 'ft' / 'weights' / 'last.pt')!r}).model.parameters()))")
    assert r.stdout.split()[-1] == params  # not rebuilt full-width from the yaml
    _clean_error(run_cli("prune", f"model={src}", "prune=0.3", f"out={tmp_path / 'g.pt'}", "prune_native=True",
                         "prune_global=True"), "prune_native")
