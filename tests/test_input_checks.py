"""Every mode checks its input before any work, as `train` does: bad input is one line `yolo-opt: error: ...`, exit 2,
no traceback, nothing written (issue 44's probe cases, through the CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import IMGSZ, run_cli, run_python

# Many refusals in one fresh process (an import of torch and Ultralytics per case would cost minutes): the real
# `main()` of the CLI for each argv, its exit code and stderr; an exception escaping it is recorded as a traceback.
BATCH = """
import contextlib, io, json, sys, traceback
from yolo_opt.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except BaseException:
        code, err = 1, io.StringIO("Traceback " + traceback.format_exc())
    out.append([code, err.getvalue()])
print("RESULTS" + json.dumps(out))
"""


def refusals(cases: list[list[str]], cwd: Path) -> list[tuple[int, str]]:
    """Exit code and stderr of `yolo-opt ARGV` for each case, all in one fresh process run in `cwd`."""
    r = run_python(BATCH.replace("sys.argv[1]", repr(json.dumps(cases))), cwd=cwd)
    assert "RESULTS" in r.stdout, r.stderr[-3000:]
    return [tuple(x) for x in json.loads(r.stdout.split("RESULTS", 1)[1])]


def assert_refused(results, cases) -> None:
    for (code, err), argv in zip(results, cases, strict=True):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("yolo-opt: error:"), (argv, err[-2000:])
        assert "Traceback" not in err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_val_never_runs_a_download_script(tmp_path, v8_checkpoint):
    """`val` handed a data.yaml with a missing val folder to Ultralytics, which ran its `download:` script."""
    marker = tmp_path / "MARKER"
    names = "names: {0: circle, 1: square, 2: triangle, 3: cross, 4: ring}\n"
    for i, payload in enumerate((f"download: |\n  open({str(marker)!r}, 'w').write('ran')\n",
                                 f"download: bash -c 'touch {marker}'\n")):
        data = write(tmp_path / f"x{i}.yaml", f"path: {tmp_path / 'nothing'}\ntrain: images/train\nval: images/val\n"
                                               f"{names}{payload}")
        r = run_cli("val", f"model={v8_checkpoint}", f"data={data}", f"imgsz={IMGSZ}", cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("yolo-opt: error:"), r.stderr[-3000:]
        assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x0.yaml", "x1.yaml"]  # no runs/


def test_val_and_predict_check_their_inputs(tmp_path, v8_checkpoint, tiny_data):
    """The dataset, model, argument and source checks of `val` and `predict`: each bad input one line, nothing
    written (no runs/ in the working folder)."""
    images = tiny_data.parent / "images" / "val"
    text = "path: {root}\ntrain: images/train\nval: images/val\nnames: {names}\n"
    five = "{0: circle, 1: square, 2: triangle, 3: cross, 4: ring}"
    empty = tmp_path / "empty"
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "images" / "train").mkdir(parents=True)
    corrupt = tmp_path / "corrupt"
    for split in ("train", "val"):
        (corrupt / "images" / split).mkdir(parents=True)
        (corrupt / "images" / split / "a.png").write_bytes(b"not a png")
    datasets = {
        "no_names": write(tmp_path / "no_names.yaml", f"path: {tiny_data.parent}\ntrain: images/train\n"
                                                       "val: images/val\n"),
        "nc4": write(tmp_path / "nc4.yaml", text.format(root=tiny_data.parent, names="{0: a, 1: b, 2: c, 3: d}")),
        "syntax": write(tmp_path / "syntax.yaml", "names: [a, b\nval: : :\n"),
        "python_tag": write(tmp_path / "tag.yaml", "names: !!python/object/apply:os.system ['true']\n"),
        "empty": write(tmp_path / "empty.yaml", text.format(root=empty, names=five)),
        "corrupt": write(tmp_path / "corrupt.yaml", text.format(root=corrupt, names=five)),
    }
    note = write(tmp_path / "notes.txt", "hello\n")
    (tmp_path / "no_images").mkdir()
    m, d = f"model={v8_checkpoint}", f"data={tiny_data}"
    cases = [["val", m, f"data={p}", f"imgsz={IMGSZ}"] for p in datasets.values()] + [
        ["val", f"model={tmp_path}", d], ["val", f"model={note}", d], ["val", f"model={tiny_data}", d],
        ["val", m, d, "split=foo"], ["val", m, d, "conf=abc"], ["val", m, d, "imgsz=-1"],
        ["val", f"model={tmp_path / 'a'}\nb.pt", d],
        ["predict", m, f"source={tmp_path / 'missing'}"], ["predict", m, f"source={note}"],
        ["predict", m, f"source={tmp_path / 'no_images'}"], ["predict", m, f"source={images}", "conf=nan"],
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_refused(refusals(cases, tmp_path), cases)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, nothing else


def test_ultralytics_arguments_are_checked_before_any_work(tmp_path, v8_checkpoint, tiny_data):
    """Ultralytics' own checks (types, ranges, device, export format, opset) as one line, before a run folder."""
    m, d = f"model={v8_checkpoint}", f"data={tiny_data}"
    train = ["train", m, d, f"project={tmp_path / 'p'}"]
    cases = [train + [a] for a in ("epochs=abc", "epochs=0", "epochs=-1", "epochs=nan", "lr0=abc", "imgsz=0",
                                   "warmup_epochs=inf", "device=cuda7")]
    cases[5].append("epochs=1")  # imgsz=0, not another key, is what is refused
    cases += [["train", f"model={tiny_data}", d, "epochs=1", f"project={tmp_path / 'p'}"],
              ["export", m, "format=bogus"], ["export", m, "format=onnx", "opset=99"],
              ["export", m, "format=onnx", "calib=entropy"]]
    results = refusals(cases, tmp_path)
    assert_refused(results, cases)
    assert "imgsz=0" in results[5][1] and "device=cuda7" in results[7][1] and "backbone" in results[8][1]
    assert "format=bogus" in results[9][1] and "opset" in results[10][1] and "int8=True" in results[11][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_floats_must_be_finite(value):
    """NaN compared False with every bound, so prune_target=nan pruned and max_map_drop=nan exported."""
    from yolo_opt.errors import ConfigError
    from yolo_opt.options import DistillOptions, PruneOptions, PTQOptions, QATOptions

    for cls, key in ((PruneOptions, "prune_target"), (PruneOptions, "sparsity"), (DistillOptions, "distill_weight"),
                     (DistillOptions, "distill_features"), (QATOptions, "qat_lr0"), (PTQOptions, "max_map_drop")):
        with pytest.raises(ConfigError, match="finite"):
            cls(**{key: value})
        with pytest.raises(ConfigError, match="finite"):
            cls(**{key: float(value)})
    assert math.isclose(PruneOptions(prune_target=0.5).prune_target, 0.5)


def test_nan_through_the_cli_and_a_recipe(tmp_path, v8_checkpoint, tiny_data):
    recipe = write(tmp_path / "r.yaml", "stages: [prune]\nprune_target: .nan\n")
    out = tmp_path / "x.pt"
    m, d = f"model={v8_checkpoint}", f"data={tiny_data}"
    cases = [["prune", m, "prune_target=nan", f"out={out}"],
             ["export", m, "format=onnx", "int8=True", d, "max_map_drop=nan", f"out={tmp_path / 'q.onnx'}"],
             ["optimize", m, d, "prune_target=nan", f"project={tmp_path / 'runs'}"],
             ["optimize", m, d, "max_map_drop=nan", f"project={tmp_path / 'runs'}"],
             ["optimize", m, d, f"recipe={recipe}", f"project={tmp_path / 'runs'}"],
             ["optimize", m, d, "lr0=nan", f"project={tmp_path / 'runs'}"],
             ["prune", m, "prune=0.5", f"out={tmp_path / ('n' * 300 + '.pt')}"]]
    assert_refused(refusals(cases, tmp_path), cases)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_run_folders_that_are_not_ours_are_refused_untouched(tmp_path, v8_checkpoint, tiny_data):
    """optimize wrote .lock, input.pt and state.json into a user's folder; another model's run got a .lock
    before the refusal; a corrupt state.json was a JSONDecodeError traceback; demo kept working in a user's out=."""
    from yolo_opt.pipeline.state import check_run_folder

    mine = tmp_path / "runs" / "mine"
    mine.mkdir(parents=True)
    write(mine / "notes.txt", "mine")
    other = tmp_path / "runs" / "other"
    other.mkdir()
    write(other / "state.json", json.dumps({"fingerprint": {"model": "x"}, "recipe": {}, "stages": {},
                                            "artefacts": {}}))
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    write(broken / "state.json", "{not json")
    snapshot = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    m, d, project = f"model={v8_checkpoint}", f"data={tiny_data}", f"project={tmp_path / 'runs'}"
    cases = [["optimize", m, d, project, f"name={n}"] for n in ("mine", "other", "broken")]
    cases += [["demo", f"out={mine}"], ["demo", f"out={tmp_path / 'demo'}", "arch=yolov99"]]
    results = refusals(cases, tmp_path)
    assert_refused(results, cases)
    assert "not a yolo-opt run" in results[0][1] and "another model" in results[1][1]
    assert "state.json" in results[2][1] and "arch=yolov99" in results[4][1]
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == snapshot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert check_run_folder(tmp_path / "absent", {}, {}) is None


def test_sensitivity_refusal_leaves_no_folder(tmp_path, v8_checkpoint, tiny_data):
    out = tmp_path / "sens"
    r = run_cli("sensitivity", f"model={v8_checkpoint}", f"data={tiny_data}", f"imgsz={IMGSZ}", "groups=model.99.x",
                "score=err", f"project={out}", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "unknown group" in lines[0], r.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_segmentation_model_needs_a_segment_dataset(tmp_path, tiny_data):
    """A segmentation model validated on box-only labels failed inside Ultralytics."""
    from ultralytics.nn.tasks import SegmentationModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.io.checkpoint import save_model

    net = SegmentationModel("yolov8n-seg.yaml", nc=len(CLASS_NAMES), verbose=False)
    net.names = dict(enumerate(CLASS_NAMES))
    seg = save_model(net, tmp_path / "seg.pt", train_args={"imgsz": IMGSZ, "task": "segment"})
    cases = [["val", f"model={seg}", f"data={tiny_data}", f"imgsz={IMGSZ}"]]
    results = refusals(cases, tmp_path)
    assert_refused(results, cases)
    assert "polygon" in results[0][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.pt"]


def test_resume_of_a_finished_run_is_refused_before_its_dataset_is_fetched(tmp_path):
    """`resume=True` on a finished checkpoint whose data is `coco8.yaml` went to Ultralytics' (offline) download."""
    import torch

    from tests.conftest import make_checkpoint
    from yolo_opt.io.checkpoint import read_checkpoint

    ckpt = make_checkpoint("yolov8n.yaml", tmp_path / "last.pt")
    assert read_checkpoint(ckpt).get("epoch", -1) == -1  # what Ultralytics writes at the end of a run
    state = torch.load(ckpt, weights_only=False)
    state["train_args"] = {**state.get("train_args", {}), "data": "coco8.yaml", "imgsz": IMGSZ}
    torch.save(state, ckpt)
    cases = [["train", f"model={ckpt}", "resume=True"]]
    results = refusals(cases, tmp_path)
    assert_refused(results, cases)
    assert "finished" in results[0][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no download, no runs/
