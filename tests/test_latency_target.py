"""prune_latency=: the latency table (real ONNX Runtime), the allocation by time, the measured check, the options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

from tests.conftest import IMGSZ, run_cli
from yolo_opt.errors import ConfigError, PruneError
from yolo_opt.options import PruneOptions


@pytest.fixture(scope="module")
def estimate():
    from yolo_opt.prune.allocation import macs_estimate

    torch.manual_seed(0)
    return macs_estimate(DetectionModel("yolov8n.yaml", nc=5, verbose=False), 8)


@pytest.mark.parametrize("given, words", [
    ({"prune_latency": 0.5, "prune_target": 0.5}, "not both \\(prune_target and prune_latency\\)"),
    ({"prune_latency": 0.5, "prune": 0.3}, "not both \\(prune and prune_latency\\)"),
    ({"lat_runtime": "openvino"}, "lat_runtime= sets how prune_latency= is timed"),
    ({"lat_imgsz": 320}, "lat_imgsz= sets how prune_latency= is timed"),
    ({"lat_rounds": 5}, "lat_rounds= sets how prune_latency= is timed"),
    ({"prune_latency": 0.5, "lat_rounds": 0}, "out of range"),
    ({"prune_latency": 0.5, "prune_global": True}, "cannot be combined with prune_global"),
    ({"prune_latency": 0.5, "lat_imgsz": 300}, "multiple of the model stride 32"),
    ({"prune_latency": 1.0}, "out of range"),
    ({"prune_latency": 0.5, "lat_runtime": "tflite"}, "unknown lat_runtime"),
])
def test_latency_options_refused(given, words):
    with pytest.raises(ConfigError, match=words):
        PruneOptions(**given)


def test_latency_target_allocates_per_group():
    opts = PruneOptions(prune_latency=0.5)
    assert opts.active and opts.per_layer and opts.by_group
    assert PruneOptions(prune_latency=0.5, prune_ratios="uniform").by_group


def test_allocation_cuts_where_time_is_saved(estimate):
    """A cost in which one group's convolutions take no time: the allocation by cost never cuts that group (it buys
    nothing), whatever its GFLOPs, and lands on the target; by GFLOPs it would be cut like the rest."""
    from yolo_opt.prune.allocation import allocate_for_cost

    free = "model.0"  # the stem: large maps, few channels
    assert free in estimate.groups
    touched = {lname for (lname, _) in estimate.share[free]}

    def cost(ratios):
        widths = estimate.widths(ratios)
        total = 0.0
        for lname, (conv, hw) in estimate.convs.items():
            if lname not in touched:
                cin, cout = widths[lname]
                total += conv.kernel_size[0] * conv.kernel_size[1] * hw * cin * cout / conv.groups
        return total

    ratios = allocate_for_cost(None, estimate, cost, 0.5)
    assert ratios[free] == 0.0
    assert cost(ratios) <= 0.5 * cost({})
    assert sum(r > 0 for r in ratios.values()) > len(ratios) // 2  # the rest shares the cut
    with pytest.raises(PruneError, match="ask for a larger target"):
        allocate_for_cost(None, estimate, cost, 0.001)


def test_allocation_spares_sensitive_groups(estimate):
    """Equal time everywhere, one group damaged by any cut: it is cut last (not at all at a mild target)."""
    from yolo_opt.prune.allocation import allocate_for_cost

    groups = list(estimate.groups)
    hurt = groups[len(groups) // 2]
    report = {"ratios": [0.25, 0.5, 0.75], "baseline": {"err": 0.0},
              "groups": {g: {"err": [0.5, 0.8, 0.9] if g == hurt else [0.0, 0.0, 0.0]} for g in groups}}
    ratios = allocate_for_cost(report, estimate, estimate.macs, 0.7, metric="err")
    assert ratios[hurt] == 0.0 and estimate.ratio(ratios) <= 0.7


def test_latency_table_times_and_caches(estimate, tmp_path, monkeypatch):
    """Every convolution case timed on ONNX Runtime (in its own process), a second build reuses them all, and the
    predictor gives less time to a model pruned harder."""
    from yolo_opt.bench.layer_latency import LatencyEstimate, build_table, conv_entries

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    entries = conv_entries(estimate, IMGSZ)
    stem = entries["model.0.conv"]
    assert (stem.shape.h, stem.shape.w) == (IMGSZ, IMGSZ) and stem.cin == [3] and stem.cout == [8, 16]
    table, cost = build_table(entries, "onnx", progress=False)
    cases = {e.shape.key(i, o) for e in entries.values() for i, o in e.cases()}
    assert set(table) == cases and cost["timed"] == len(cases) and cost["reused"] == 0
    assert all(v >= 0 for v in table.values()) and sum(table.values()) > 0
    again, cost2 = build_table(entries, "onnx", progress=False)
    assert again == table and cost2["timed"] == 0 and cost2["reused"] == len(cases)
    predictor = LatencyEstimate(estimate, entries, table)
    predictor.calibrate(predictor.conv_ms * 1.5)
    half = dict.fromkeys(estimate.groups, 0.5)
    assert predictor.ms({}) == pytest.approx(predictor.conv_ms * 1.5)
    assert predictor.ms(half) == pytest.approx(predictor.convs_ms(half) * 1.5)  # the rest shrinks with the convolutions
    assert predictor.ratio(half) < predictor.ratio(dict.fromkeys(estimate.groups, 0.25)) < 1
    # a pruned model itself (a tuning trial's): the table read at the widths it has is what the ratios predicted
    from yolo_opt.prune.pruner import prune_model

    mixed = {g: (0.25, 0.5, 0.0)[i % 3] for i, g in enumerate(estimate.groups)}
    pruned = DetectionModel("yolov8n.yaml", nc=5, verbose=False)
    assert predictor.model_ms(pruned) == pytest.approx(predictor.ms({}))
    prune_model(pruned, 0.0, "l2", 8, layer_ratios=mixed)
    assert predictor.model_ms(pruned) == pytest.approx(predictor.ms(mixed), rel=1e-6)
    assert predictor.ms(mixed) < predictor.ms({})
    with pytest.raises(KeyError):  # another architecture: not the table's model
        predictor.model_ms(DetectionModel("yolo11n.yaml", nc=5, verbose=False))


def test_runtimes_that_cannot_be_timed_here_are_refused(tiny_data, v8_checkpoint, tmp_path):
    """One line, exit 2, before anything is written."""
    r = run_cli("prune", f"model={v8_checkpoint}", f"out={tmp_path / 'p.pt'}", "prune_latency=0.5",
                "lat_runtime=tensorrt", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert "lat_runtime=tensorrt" in r.stderr + r.stdout and "not" in r.stderr + r.stdout
    assert not (tmp_path / "p.pt").exists()
    if not torch.cuda.is_available():
        r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=1", f"imgsz={IMGSZ}",
                    "prune_latency=0.5", "lat_runtime=torch-cuda", f"project={tmp_path / 'runs'}", cwd=tmp_path)
        assert r.returncode == 2 and "torch sees none here" in r.stderr + r.stdout
        assert not (tmp_path / "runs").exists()


def test_prune_to_a_latency_end_to_end(v8_checkpoint, tmp_path):
    """`yolo-opt prune prune_latency=` without data: one ratio for every group, from the table; the pruned copy timed
    against the unpruned model on ONNX Runtime; both figures printed and kept in the checkpoint's history."""
    from yolo_opt.io.checkpoint import load_model, meta

    out = tmp_path / "fast.pt"
    r = run_cli("prune", f"model={v8_checkpoint}", f"out={out}", "prune_latency=0.6", f"imgsz={IMGSZ}", "lat_rounds=1",
                cwd=tmp_path,
                env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"latency on ONNX Runtime CPU at {IMGSZ} px" in r.stdout and "0.6x asked" in r.stdout
    record = meta(load_model(out))["history"][-1]["latency"]
    assert record["allocation"] == "uniform" and record["lat_imgsz"] == IMGSZ and record["measured"] > 0
    assert record["rounds"] == 1
    first = record["attempts"][0]  # the table's allocation, before any measurement steers the goal
    assert first["goal"] == 0.6 and 0 < first["predicted"] < 1 and first["gflops_ratio"] < 1
    assert 1 <= len(record["attempts"]) <= 3 and record["table"]["timed"] > 0
    assert json.loads((tmp_path / "cache" / "yolo-opt" / "latency_table.json").read_text())


def test_train_to_a_latency(tiny_data, v8_checkpoint, tmp_path):
    """`yolo-opt train prune_latency=`: the trainer allocates per group from its sensitivity analysis and the latency
    table at the first pruning step, times the pruned copy at lat_imgsz, and says so; the record travels with the
    model and renders as the optimize report's section."""
    from yolo_opt.bench.latency_target import latency_markdown
    from yolo_opt.io.checkpoint import load_model, meta
    from yolo_opt.training.trainer import RUN_KEY

    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=1", f"imgsz={IMGSZ}", "batch=8",
                "workers=0", "prune_latency=0.7", "lat_imgsz=96", "lat_rounds=1", f"project={tmp_path / 'runs'}", "name=lat",
                cwd=tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "latency on ONNX Runtime CPU at 96 px" in r.stdout and "0.7x asked" in r.stdout
    best = Path(next(ln for ln in r.stdout.splitlines() if ln.startswith("yolo-opt: trained model ")).split(" ", 3)[3])
    record = meta(load_model(best))[RUN_KEY]["latency"]
    assert record["allocation"] == "sensitivity" and record["lat_imgsz"] == 96 and record["asked"] == 0.7
    assert (best.parents[1] / "sensitivity" / "sensitivity.json").exists()
    text = latency_markdown(record)
    assert "## Latency target (prune_latency=)" in text and f"**{record['measured']:.3f}x**" in text


def test_the_next_goal_interpolates_once_the_asked_ratio_is_bracketed():
    from yolo_opt.bench.latency_target import next_goal

    assert next_goal([{"goal": 0.5, "measured": 0.4}], 0.5) == pytest.approx(0.625)  # scaled by the miss
    assert next_goal([{"goal": 0.5, "measured": 0.1}], 0.5) == pytest.approx(0.665)  # at most a third more
    bracketed = [{"goal": 0.5, "measured": 0.423}, {"goal": 0.59, "measured": 0.6515}]
    assert next_goal(bracketed, 0.5) == pytest.approx(0.5 + 0.09 * 0.077 / 0.2285)


def test_a_recipe_states_a_latency_target(tmp_path):
    """`prune_latency:` in a recipe; the run's lat_imgsz (a benchmark key there) is the size it is timed at too."""
    from yolo_opt.pipeline.recipes import load_recipe

    recipe = tmp_path / "fast.yaml"
    recipe.write_text("stages: [baseline, prune, export, benchmark]\nprune_latency: 0.5\nlat_runtime: openvino\n")
    loaded = load_recipe(recipe, {"lat_imgsz": 320})
    assert loaded.train.prune.prune_latency == 0.5 and loaded.train.prune.lat_runtime == "openvino"
    assert loaded.train.prune.lat_imgsz == 320 and loaded.bench.lat_imgsz == 320
    instead = load_recipe("cpu-onnx", {"prune_latency": 0.5})  # the override replaces the recipe's prune_target
    assert instead.train.prune.prune_latency == 0.5 and instead.train.prune.prune_target is None
    with pytest.raises(ConfigError, match="not both \\(prune_target and prune_latency\\)"):
        load_recipe("cpu-onnx", {"prune_latency": 0.5, "prune_target": 0.5})
