"""Per-layer sensitivity: masking equals pruning, consistent ordering, allocation rule, prune_ratios=sensitivity."""

import copy
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import IMGSZ, run_cli

GROUPS = "model.2.cv0,model.4.m.1.cv2,model.9.cv1,model.22.cv3.0.0"


@pytest.fixture(scope="module")
def fixed_checkpoint(tmp_path_factory, tiny_data) -> Path:
    """A fixed-weight yolov8n: seeded random init, BN statistics calibrated on the tiny training images.

    A freshly built model keeps BN's default statistics (mean 0, var 1), so its activations vanish with depth
    (~1e-8 at the SPPF) and pruning a deep group changes nothing. Calibrated statistics make every group matter.
    """
    import numpy as np
    from PIL import Image
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.io.checkpoint import save_model

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=len(CLASS_NAMES), verbose=False)
    model.names = dict(enumerate(CLASS_NAMES))
    files = sorted((tiny_data.parent / "images" / "train").glob("*"))[:16]
    x = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB").resize((IMGSZ, IMGSZ))) for f in files]))
    x = x.permute(0, 3, 1, 2).float() / 255
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    return save_model(model.eval(), tmp_path_factory.mktemp("fixed") / "fixed.pt",
                      train_args={"imgsz": IMGSZ, "task": "detect"})


@pytest.fixture(scope="module")
def v8(fixed_checkpoint):
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.prune.blocks import make_prunable

    model = load_model(fixed_checkpoint).float().eval()
    make_prunable(model)
    return model


@pytest.fixture(scope="module")
def sens_run(tmp_path_factory, fixed_checkpoint, tiny_data):
    """`yolo-opt sensitivity` on the fixed-weight yolov8n, four groups, 3 ratios, 8 val images."""
    project = tmp_path_factory.mktemp("sens")
    r = run_cli("sensitivity", f"model={fixed_checkpoint}", f"data={tiny_data}", f"imgsz={IMGSZ}", "batch=8",
                "ratios=0.25,0.5,0.75", "max_images=8", f"groups={GROUPS}", f"project={project}", "name=exp")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return project / "exp", r.stdout


def test_mask_equals_physical_pruning(v8):
    """Zeroing a group's planned channels gives the outputs of really pruning that group alone."""
    from yolo_opt.prune import prune_model
    from yolo_opt.prune.groups import mask_group, plans

    planned, _ = plans(v8, 0.5, "l2", 8, IMGSZ)
    x = torch.rand(2, 3, IMGSZ, IMGSZ)
    for name in ("model.4.m.1.cv2", "model.22.cv3.0.0"):
        items = next(p[2] for p in planned if p[0] == name)
        masked, pruned = copy.deepcopy(v8), copy.deepcopy(v8)
        mask_group(masked, items)
        prune_model(pruned, 0.0, "l2", 8, False, IMGSZ, layer_ratios={name: 0.5})
        assert pruned.get_submodule(name).conv.out_channels < v8.get_submodule(name).conv.out_channels
        with torch.no_grad():
            a, b = masked(x)[0], pruned(x)[0]
        assert (a - b).abs().max() <= 1e-3 * a.abs().max()  # float summation order only


def test_sensitivity_report_and_ordering(sens_run):
    """Harder pruning of a group never scores better than lighter pruning (within MAP_NOISE / ERR_NOISE)."""
    from yolo_opt.prune.sensitivity import ERR_NOISE, MAP_NOISE

    out, stdout = sens_run
    report = json.loads((out / "sensitivity.json").read_text())
    assert (out / "sensitivity.png").stat().st_size > 10_000
    md = (out / "sensitivity.md").read_text()
    assert set(report["groups"]) == set(GROUPS.split(","))
    assert all(name in md for name in GROUPS.split(",")) and "mAP @0.5" in md and "model.9.cv1" in stdout
    base = report["baseline"]
    for name, row in report["groups"].items():
        maps, errs = [base["map"], *row["map"]], [0.0, *row["err"]]
        assert row["pruned"] == sorted(row["pruned"]), name
        for i in range(len(maps) - 1):
            assert maps[i + 1] <= maps[i] + MAP_NOISE, (name, maps)
            assert errs[i + 1] >= errs[i] - ERR_NOISE, (name, errs)
    # the fixed-weight model scores ~0 mAP, so the output change carries the ordering: it must be non-trivial
    assert max(max(row["err"]) for row in report["groups"].values()) > 0.05


def _report(groups: dict[str, int], sensitive: str | None) -> dict:
    """A hand-made report: every group flat (no drop) except `sensitive`, whose mAP collapses."""
    rows = {}
    for name, ch in groups.items():
        drop = [0.1, 0.3, 0.5] if name == sensitive else [0.0, 0.0, 0.0]
        rows[name] = {"channels": ch, "pruned": [], "map": [0.6 - d for d in drop], "map50": [0.8] * 3,
                      "err": [0.1, 0.2, 0.3]}
    return {"ratios": [0.25, 0.5, 0.75], "baseline": {"map": 0.6, "map50": 0.8, "err": 0.0}, "groups": rows}


def test_allocation_rule_meets_target(v8):
    """Equal curves give uniform ratios; a sensitive group is spared; real GFLOPs meet the target."""
    from yolo_opt.prune import count_macs, prune_model
    from yolo_opt.prune.allocation import allocate_ratios
    from yolo_opt.prune.groups import prunable_groups

    groups = prunable_groups(copy.deepcopy(v8), IMGSZ)
    assert "model.4.m.1.cv2" in groups and len(groups) > 40
    flat = allocate_ratios(_report(groups, None), v8, 0.6, imgsz=IMGSZ)
    assert max(flat.values()) - min(flat.values()) < 0.01  # equal sensitivity -> uniform (up to rounding flips)
    spared = allocate_ratios(_report(groups, "model.4.m.1.cv2"), v8, 0.6, imgsz=IMGSZ)
    others = [r for n, r in spared.items() if n != "model.4.m.1.cv2"]
    assert spared["model.4.m.1.cv2"] < min(others)
    base = count_macs(v8, IMGSZ)[0]
    pruned = prune_model(copy.deepcopy(v8), 0.0, "l2", 8, False, IMGSZ, layer_ratios=spared)
    assert count_macs(pruned, IMGSZ)[0] / base == pytest.approx(0.6, abs=0.04)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, fixed_checkpoint) -> Path:
    """A hand-made report covering every group of the fixed model; model.4.m.1.cv2 is the sensitive one."""
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.prune.groups import prunable_groups

    path = tmp_path_factory.mktemp("full") / "full.json"
    path.write_text(json.dumps(_report(prunable_groups(load_model(fixed_checkpoint).float(), IMGSZ), "model.4.m.1.cv2")))
    return path


def test_prune_with_sensitivity_ratios(sens_run, full_report, fixed_checkpoint, tmp_path):
    """`yolo-opt prune prune_ratios=sensitivity` needs a report for every group; with one, GFLOPs match uniform."""
    out, _ = sens_run
    partial = out / "sensitivity.json"  # only four groups were measured
    r = run_cli("prune", f"model={fixed_checkpoint}", "prune=0.3", "prune_ratios=sensitivity",
                f"sensitivity={partial}", f"out={tmp_path / 'p.pt'}", f"imgsz={IMGSZ}")
    assert r.returncode == 2 and "does not cover" in r.stderr and "Traceback" not in r.stderr
    from yolo_opt.errors import ConfigError
    from yolo_opt.options import PruneOptions

    with pytest.raises(ConfigError, match="prune_method=taylor needs prune_ratios=uniform or sensitivity="):
        PruneOptions(prune_ratios="sensitivity", prune_method="taylor")
    # auto: per-layer for a GFLOPs target with one ratio per layer and a data-free criterion, uniform otherwise
    assert PruneOptions(prune_target=0.5).per_layer and PruneOptions(prune=0.3, prune_ratios="sensitivity").per_layer
    assert not any(o.per_layer for o in (PruneOptions(prune=0.3), PruneOptions(prune_target=0.5, prune_global=True),
                                         PruneOptions(prune_target=0.5, prune_method="taylor"),
                                         PruneOptions(prune_target=0.5, prune_ratios="uniform")))
    # an analysis needs val images: without data= or a report, explicit per-layer ratios are refused
    r = run_cli("prune", f"model={fixed_checkpoint}", "prune=0.3", "prune_ratios=sensitivity",
                f"out={tmp_path / 'x.pt'}", f"imgsz={IMGSZ}")
    assert r.returncode == 2 and "pass data=data.yaml" in r.stderr and not (tmp_path / "x.pt").exists()

    from yolo_opt.io.checkpoint import load_model

    uni = run_cli("prune", f"model={fixed_checkpoint}", "prune=0.3", f"out={tmp_path / 'u.pt'}", f"imgsz={IMGSZ}")
    sens = run_cli("prune", f"model={fixed_checkpoint}", "prune=0.3", "prune_ratios=sensitivity",
                   f"sensitivity={full_report}", f"out={tmp_path / 's.pt'}", f"imgsz={IMGSZ}")
    assert uni.returncode == 0 and sens.returncode == 0, sens.stderr[-3000:]

    def gflops_ratio(text: str) -> float:
        return float(text.split("GFLOPs")[1].split("(")[1].split("x")[0])

    assert gflops_ratio(sens.stdout) == pytest.approx(gflops_ratio(uni.stdout), abs=0.04)
    spared = load_model(tmp_path / "s.pt").get_submodule("model.4.m.1.cv2").conv.out_channels
    assert spared > load_model(tmp_path / "u.pt").get_submodule("model.4.m.1.cv2").conv.out_channels


def test_train_with_sensitivity_ratios(full_report, fixed_checkpoint, tiny_data, tmp_path):
    """Inside the trainer: 2 pruning steps with per-group ratios; the sensitive group is spared, GFLOPs ~ uniform."""
    from yolo_opt.io.checkpoint import load_model, meta

    r = run_cli("train", f"model={fixed_checkpoint}", f"data={tiny_data}", "epochs=2", "prune=0.3", "prune_steps=2",
                "prune_ratios=sensitivity", f"sensitivity={full_report}", f"imgsz={IMGSZ}", "batch=8", "workers=0",
                "plots=False", "warmup_epochs=0", f"project={tmp_path}", "name=t", "exist_ok=True")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "prune step 2/2" in r.stdout + r.stderr
    model = load_model(tmp_path / "t" / "weights" / "last.pt")
    run = meta(model)["train_run"]
    assert run["layer_ratios"]["model.4.m.1.cv2"] < 0.05 < run["layer_ratios"]["model.6.m.1.cv2"]
    assert model.get_submodule("model.4.m.1.cv2").conv.out_channels == 32
    assert run["history"][-1]["macs_ratio"] == pytest.approx(run["layer_ratios_target"], abs=0.05)


def test_err_score_needs_no_validator(sens_run, fixed_checkpoint, tiny_data, tmp_path):
    """score=err: only the head-output change, on the same val images, with the same values as score=map's err."""
    out, _ = sens_run
    full = json.loads((out / "sensitivity.json").read_text())
    r = run_cli("sensitivity", f"model={fixed_checkpoint}", f"data={tiny_data}", f"imgsz={IMGSZ}", "score=err",
                "ratios=0.25,0.5,0.75", f"groups={GROUPS}", f"project={tmp_path}", "name=err")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "err" / "sensitivity.json").read_text())
    assert report["score"] == "err" and set(report["baseline"]) == {"err"}
    assert "mAP @" not in (tmp_path / "err" / "sensitivity.md").read_text()
    assert (tmp_path / "err" / "sensitivity.png").stat().st_size > 10_000
    for name, row in report["groups"].items():
        assert set(row) == {"channels", "pruned", "err"}
        assert row["err"] == pytest.approx(full["groups"][name]["err"], rel=0.05, abs=0.01), name


def test_oneshot_prune_target_with_data_allocates_per_layer(fixed_checkpoint, tiny_data, tmp_path):
    """`yolo-opt prune prune_target=... data=...` analyses the model on the val images; without data= it is uniform."""
    from yolo_opt.io.checkpoint import load_model, meta

    r = run_cli("prune", f"model={fixed_checkpoint}", "prune_target=0.6", f"data={tiny_data}", f"out={tmp_path / 'p.pt'}",
                f"imgsz={IMGSZ}")
    assert r.returncode == 0 and "per-layer ratios" in r.stdout, r.stderr[-3000:]
    step = meta(load_model(tmp_path / "p.pt"))["history"][-1]
    assert len(set(step["layer_ratios"].values())) > 1 and 0.55 <= step["macs"] / meta(load_model(tmp_path / "p.pt"))["base_macs"] <= 0.61
    r = run_cli("prune", f"model={fixed_checkpoint}", "prune_target=0.6", f"out={tmp_path / 'u.pt'}", f"imgsz={IMGSZ}")
    assert r.returncode == 0 and "per-layer" not in r.stdout and "layer_ratios" not in meta(load_model(tmp_path / "u.pt"))["history"][-1]


def test_train_allocates_per_layer_by_default(fixed_checkpoint, tiny_data, tmp_path):
    """prune_target= without other keys: the trainer analyses the model (score=err) in the run folder, allocates
    per-group ratios once, keeps them in the run record and meets the GFLOPs target."""
    from yolo_opt.io.checkpoint import load_model, meta

    r = run_cli("train", f"model={fixed_checkpoint}", f"data={tiny_data}", "epochs=1", "prune_target=0.6",
                f"imgsz={IMGSZ}", "batch=8", "workers=0", "plots=False", "warmup_epochs=0", f"project={tmp_path}",
                "name=t", "exist_ok=True")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "t" / "sensitivity" / "sensitivity.json").read_text())
    assert report["score"] == "err" and len(report["groups"]) > 40
    run = meta(load_model(tmp_path / "t" / "weights" / "last.pt"))["train_run"]
    ratios = run["layer_ratios"]
    assert set(ratios) == set(report["groups"]) and max(ratios.values()) - min(ratios.values()) > 0.2
    assert run["history"][-1]["macs_ratio"] == pytest.approx(0.6, abs=0.05)


def test_target_beyond_the_measured_ratios_is_refused(full_report, fixed_checkpoint, tiny_data, tmp_path):
    """Per-layer ratios stop at the largest measured ratio: a target that needs more is one line, exit 2, before any
    work (train: no run folder; prune: no output file)."""
    report = json.loads(full_report.read_text())
    report["ratios"] = [0.25]
    for row in report["groups"].values():
        for k in ("map", "map50", "err"):
            row[k] = row[k][:1]
    small = tmp_path / "small.json"
    small.write_text(json.dumps(report))
    train = run_cli("train", f"model={fixed_checkpoint}", f"data={tiny_data}", "epochs=1", "prune_target=0.5",
                    f"sensitivity={small}", f"imgsz={IMGSZ}", "workers=0", f"project={tmp_path}", "name=t")
    prune = run_cli("prune", f"model={fixed_checkpoint}", "prune_target=0.5", f"sensitivity={small}",
                    f"out={tmp_path / 'p.pt'}", f"imgsz={IMGSZ}")
    for r in (train, prune):
        assert r.returncode == 2 and "needs more than ratio 0.25" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists() and not (tmp_path / "p.pt").exists()


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_per_layer_steps_land_on_the_one_shot_allocation(cfg):
    """Three pruning steps with per-layer ratios and channel rounding end at the widths one step would give: a
    narrow group that rounding spared early is pruned later (fractions compounding on the current width left
    16-channel groups whole and YOLO26n at 0.61x GFLOPs instead of 0.5x)."""
    import copy

    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.arch import adapter
    from yolo_opt.prune import count_macs, prune_model
    from yolo_opt.prune.groups import plans
    from yolo_opt.training.schedule import RunState, group_width

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=5, verbose=False).eval()
    adapter(model).make_prunable()
    final = {name: 0.5 for name, _, _ in plans(model, 0.5, "l2", 8)[0]}
    assert any(group_width(model, n) == 16 for n in final)  # the groups that rounding spares at small steps
    one_shot = prune_model(copy.deepcopy(model), 0, "l2", 8, layer_ratios=final)
    run = RunState()
    run.start_allocation(model, final, None)
    for step in (1, 2, 3):
        prune_model(model, 0, "l2", 8, layer_ratios=run.layer_step(model, step, 3))
    assert {n: group_width(model, n) for n in final} == {n: group_width(one_shot, n) for n in final}
    assert count_macs(model, 128)[0] == count_macs(one_shot, 128)[0]


def test_output_change_weighs_objects_and_the_worst_branch():
    """The err score: background anchors weigh nothing, a confident anchor's box counts, and a change to one branch
    of an end-to-end head scores in full (its worst-hit branch), not halved by the branch it leaves alone."""
    from yolo_opt.prune.sensitivity import output_change

    scores = torch.full((1, 2, 100), -20.0)
    scores[0, 0, 7] = 5.0  # one anchor holds an object
    boxes = torch.rand(1, 4, 100) + 1

    def branch(s, b):
        return {"boxes": b, "scores": s}

    ref = [("one2many", branch(scores, boxes)), ("one2one", branch(scores, boxes))]
    assert output_change(ref, ref) == 0.0
    background = scores.clone()
    background[0, 1, 50] = -10.0  # a logit moved by 10 where nothing is: ~4.5e-5 of probability
    moved_bg = boxes.clone()
    moved_bg[0, :, 50] += 5.0
    assert output_change([(n, branch(background, moved_bg)) for n, _ in ref], ref) < 1e-3
    moved = boxes.clone()
    moved[0, :, 7] *= 1.5  # the object's box
    one_branch = output_change([ref[0], ("one2one", branch(scores, moved))], ref)
    both = output_change([(n, branch(scores, moved)) for n, _ in ref], ref)
    assert one_branch == pytest.approx(both) and one_branch > 0.1
