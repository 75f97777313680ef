"""Choosing the deployed form by measurement on this machine (`yolo-opt deploy`, the `select` stage), the rounding
measured on the target runtime (`round_for=`), and the latency a user feels (pipeline column)."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import IMGSZ, make_checkpoint, run_cli


def test_choice_is_the_fastest_within_the_bound_never_a_plain_export():
    from yolo_opt.deploy.select import Candidate, choose

    def c(model, form, m, ms, mask=None):
        return Candidate(model, form, f"{model}/{form}", map=m, mask_map=mask, latency_ms=ms, pipeline_ms=ms + 1)

    ref = {"map": 0.70, "mask_map": None}
    cands = [c("unpruned", "ul_ov", 0.70, 5.0), c("unpruned", "onnx_fp32", 0.70, 9.0), c("pruned", "onnx_int8", 0.68, 3.0),
             c("pruned", "ov_int8", 0.695, 4.0), c("pruned", "ov", 0.70, 4.5)]
    best, plain = choose(cands, ref, 0.01)
    assert (best.form, plain.form) == ("ov_int8", "ul_ov")  # INT8 ONNX is faster but 0.02 below the reference
    assert [x.eligible for x in cands] == [False, True, False, True, True]
    best, _ = choose(cands, ref, 0.05)
    assert best.form == "onnx_int8"
    # segmentation: the masks' mAP is bounded too
    seg = [c("pruned", "onnx_int8", 0.70, 3.0, mask=0.60), c("pruned", "ov", 0.70, 4.0, mask=0.645)]
    assert choose(seg, {"map": 0.70, "mask_map": 0.65}, 0.01)[0].form == "ov"
    # nothing within the bound: no choice (the caller writes the table and says what would pass)
    assert choose([c("pruned", "onnx_int8", 0.5, 1.0)], ref, 0.001) == (None, None)


def test_models_are_labelled_by_their_run_when_their_files_share_a_name():
    from yolo_opt.deploy.select import model_labels

    assert list(model_labels(["runs/a/pruned.pt", "runs/b/best.pt"])) == ["pruned", "best"]
    assert list(model_labels(["runs/prune/weights/best.pt", "runs/base/weights/best.pt"])) == ["prune-best", "base-best"]
    assert list(model_labels(["x/best.pt", "x/best.pt"])) == ["0-best", "1-best"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("select")
    base = make_checkpoint("yolo26n.yaml", folder / "yolo26n.pt")
    r = run_cli("prune", f"model={base}", "prune=0.5", f"out={folder / 'pruned.pt'}", f"imgsz={IMGSZ}")
    assert r.returncode == 0, r.stderr[-2000:]
    return {"pruned": folder / "pruned.pt", "unpruned": base}


def test_deploy_measures_every_form_and_delivers_the_fastest(models, tiny_data, tmp_path):
    """Through the CLI, both CPU runtimes: every form of both models validated and timed here, the plain Ultralytics
    exports as the baseline, the fastest eligible form copied into out= with the table, the figures and the plot."""
    out = tmp_path / "deploy"
    r = run_cli("deploy", f"model={models['pruned']},{models['unpruned']}", f"data={tiny_data}", f"imgsz={IMGSZ}",
                "calib_images=4", "max_map_drop=0.5", "rounds=1", "keep_candidates=True", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / "selection.json").read_text())
    forms = {(c["model"], c["form"]) for c in result["candidates"]}
    # YOLO26: its default export (Ultralytics' head) and its NMS-free head, each a form of its own
    assert forms == {(m, f) for m in ("pruned", "yolo26n") for f in ("onnx_fp32", "onnx_int8", "onnx_e2e",
                                                                        "onnx_e2e_int8", "ov", "ov_f32",
                                                                        "ov_int8")} | {("yolo26n", "ul_onnx"),
                                                                                       ("yolo26n", "ul_ov")}
    eligible = [c for c in result["candidates"] if c["eligible"]]
    assert len(eligible) == 14 and result["selected"]["latency_ms"] == min(c["latency_ms"] for c in eligible)
    # the pipeline holds the model: never faster than it, in every round
    assert all(c["pipeline_ms"] >= c["latency_ms"] > 0 and c["runtime"] for c in result["candidates"])
    assert all(c["latency_spread"][0] <= c["latency_ms"] <= c["latency_spread"][1] for c in result["candidates"])
    assert result["reference"]["model"] == "yolo26n" and "the unpruned input" in result["reference"]["why"]
    # our default export is the head plain `yolo export` ships, scored alike
    maps = {(c["model"], c["form"]): c["map"] for c in result["candidates"]}
    assert abs(maps[("yolo26n", "onnx_fp32")] - maps[("yolo26n", "ul_onnx")]) <= 0.01
    assert "held to yolo26n's FP32 mAP50-95" in r.stdout + r.stderr
    # the throughput column: every form timed at batch 8; ONNX forms from their own batch-8 export, whose INT8 is
    # calibrated on the same images as the batch-1 one (the same scales: the same model, another batch)
    assert all(c["throughput"] > 0 and c["batch_size"] == 8 for c in result["candidates"])
    assert "batch-8 img/s" in (out / "selection.md").read_text()
    scales = {}
    for name in ("model_int8.onnx", "model_int8_b8.onnx"):
        model = onnx.load(str(out / "candidates" / "pruned" / name))
        scales[name] = sorted(float(numpy_helper.to_array(t).ravel()[0]) for t in model.graph.initializer
                              if t.name.endswith("_scale") and t.dims in ([], [1]))
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == (8 if "b8" in name else 1)
    assert len(scales["model_int8.onnx"]) > 20
    assert scales["model_int8.onnx"] == pytest.approx(scales["model_int8_b8.onnx"], rel=1e-6)
    assert "OpenVINO CPU" in {c["runtime"].split(" (")[0] for c in result["candidates"]}
    assert result["speedup_vs_plain"] == pytest.approx(result["fastest_plain_export"]["latency_ms"]
                                                       / result["selected"]["latency_ms"])
    chosen = out / ("model_openvino_model" if result["selected"]["form"].startswith("ov") else "model.onnx")
    assert chosen.exists() and result["model"] == str(chosen)
    assert (out / "selection.png").stat().st_size > 5000
    assert "Selected: **" in (out / "selection.md").read_text() and "Selected: **" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]  # nothing outside out=


def test_deploy_for_a_jetson_writes_the_bundle(models, tiny_data, tmp_path):
    """TensorRT cannot run here: the target's bundle is written, and said to be unmeasured."""
    out = tmp_path / "jetson"
    r = run_cli("deploy", f"model={models['pruned']}", f"data={tiny_data}", f"imgsz={IMGSZ}", "calib_images=4",
                "target=jetson", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model_int8.onnx").exists() and (out / "build_engine.py").exists() and "builds the engine" in r.stdout


@pytest.mark.parametrize("args, needle", [(("target=tpu",), "unknown target 'tpu'"),
                                          (("runtimes=tensorrt",), "runtimes='tensorrt'"),
                                          (("int8=True",), "int8")])
def test_deploy_bad_input_is_one_line(models, tiny_data, tmp_path, args, needle):
    r = run_cli("deploy", f"model={models['pruned']}", f"data={tiny_data}", f"out={tmp_path / 'o'}", *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.iterdir())


def test_rounding_measured_on_the_runtime_and_cached(models, tiny_data, tmp_path, monkeypatch):
    """`round_for=`: pruned copies at each rounding timed here; latency per GFLOPs decides; the second ask is the
    cache's (same model, target, runtime, CPU)."""
    from yolo_opt.training import rounding

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    chosen, record = rounding.measured_round(models["unpruned"], 0.5, "onnx", IMGSZ, runs=5, rounds=1)
    assert chosen in rounding.CANDIDATES and set(record["ms"]) == {"8", "16", "32"}
    assert all(0.3 < g <= 0.53 for g in record["gflops"].values()) and record["runtime"] == "ONNX Runtime CPU"
    per = record["ms_per_gflops_ratio"]
    assert per[str(chosen)] <= min(per.values()) / (1 - rounding.MARGIN) + 1e-9
    assert rounding.cache_file().exists() and record["ratios"] == "uniform"

    def no_pruning(*args, **kwargs):
        raise AssertionError("a cache hit prunes nothing")

    with monkeypatch.context() as m:
        m.setattr("yolo_opt.training.prune_checkpoint", no_pruning)
        assert rounding.measured_round(models["unpruned"], 0.5, "onnx", IMGSZ)[0] == chosen


@pytest.mark.slow
def test_rounding_with_data_prunes_per_layer_and_is_cached_apart(models, tiny_data, tmp_path, monkeypatch):
    """Given the run's data, the copies get the per-layer ratios the run will get (a sensitivity analysis per
    rounding: the slow part) and land on the GFLOPs target at every rounding, cached apart from the uniform ones."""
    from yolo_opt.training import rounding

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rounding.measured_round(models["unpruned"], 0.5, "onnx", IMGSZ, runs=3, rounds=1)
    _, per_layer = rounding.measured_round(models["unpruned"], 0.5, "onnx", IMGSZ, runs=3, rounds=1, data=tiny_data)
    assert per_layer["ratios"] == "per-layer" and all(abs(g - 0.5) <= 0.03 for g in per_layer["gflops"].values())
    assert len(json.loads(rounding.cache_file().read_text())) == 2


def test_benchmark_adds_the_pipeline_latency(models, tiny_data, tmp_path):
    """Beside the model's time, what a user's loop spends per frame: letterbox, the model, decode (+ NMS)."""
    from yolo_opt.deploy.onnx import export_onnx

    onnx = export_onnx(models["pruned"], tmp_path / "pruned.onnx", imgsz=IMGSZ)
    r = run_cli("benchmark", f"model={models['pruned']},{onnx}", f"data={tiny_data}", f"imgsz={IMGSZ}",
                f"project={tmp_path}", "name=b")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    assert rows["pruned.onnx"]["pipeline_ms"] > rows["pruned.onnx"]["latency_ms"] * 0.5
    assert "pipeline (ms)" in (tmp_path / "b" / "report.md").read_text()


def test_the_bar_is_the_best_unpruned_model_and_a_collapsed_reference_is_flagged():
    """A short fine-tune can collapse a trained model (its warm-up restarts): such a reference is never the bar."""
    from yolo_opt.deploy.select import bar_of

    collapsed = bar_of({"best": {"map": 0.505}, "reference": {"map": 0.008}}, ["best", "reference"])
    assert collapsed["model"] == "best" and collapsed["map"] == 0.505
    assert "below its input" in collapsed["flag"]
    better = bar_of({"best": {"map": 0.345}, "reference": {"map": 0.634}}, ["best", "reference"])
    assert better["model"] == "reference" and better["map"] == 0.634 and better["flag"] is None
    alone = bar_of({"best": {"map": 0.4}}, ["best"])
    assert alone["model"] == "best" and "reference=" in alone["why"]


def test_a_pruned_model_that_misses_the_bar_is_said_and_the_table_still_written(tmp_path):
    """The unpruned reference is delivered, and one line says by how much the pruned model missed and what would
    admit it; with nothing within the bound the table, the line and the plot are still written."""
    from yolo_opt.deploy.select import Candidate, bar_of, choose, markdown, plot, verdict

    def c(model, form, m, ms):
        return Candidate(model, form, f"{model}/{form}", map=m, latency_ms=ms, pipeline_ms=ms + 1,
                         latency_spread=(ms - 0.1, ms + 0.2), runtime="ONNX Runtime CPU")

    ref = bar_of({"best": {"map": 0.345}, "reference": {"map": 0.634}}, ["best", "reference"])
    cands = [c("pruned", "onnx_int8", 0.560, 2.0), c("pruned", "onnx_fp32", 0.563, 3.0),
             c("reference", "onnx_int8", 0.630, 4.0), c("reference", "onnx_fp32", 0.634, 6.0),
             c("best", "onnx_fp32", 0.345, 6.1), c("best", "ul_onnx", 0.345, 6.5)]
    best, plain = choose(cands, ref, 0.01)
    assert (best.model, best.form, plain.form) == ("reference", "onnx_int8", "ul_onnx")
    line = verdict(cands, ref, 0.01, ["best", "reference"])
    assert line.startswith("pruned misses the bar") and "0.5630" in line and "max_map_drop=0.072" in line

    from dataclasses import asdict

    result = {"reference": ref, "max_map_drop": 0.01, "lat_imgsz": 160, "rounds": 3, "selected": None,
              "selected_label": None, "fastest_plain_export": asdict(plain), "verdict": line,
              "candidates": [{**asdict(x), "label": x.label, "eligible": False} for x in cands]}
    text = markdown(result)
    assert "**Nothing selected:**" in text and line in text and "The bar: reference's FP32 mAP50-95 0.6340" in text
    assert "4.0 (3.9-4.2)" in text  # every latency with its rounds' spread
    assert plot(result, tmp_path / "p.png").stat().st_size > 5000


def test_pipeline_is_never_faster_than_its_model_and_noise_is_named():
    from yolo_opt.bench.latency import noisy_copies, with_spread

    assert with_spread(12.34, (11.9, 12.8)) == "12.3 (11.9-12.8)" and with_spread(5.0, (5.0, 5.0)) == "5.0"
    agree = [("a", "k", 30.2, (29.0, 31.0)), ("b", "k", 30.8, (30.0, 31.5))]
    assert noisy_copies(agree) is None
    apart = [("a", "k", 30.2, (30.0, 30.5)), ("b", "k", 23.1, (23.0, 23.3)), ("c", None, 1.0, None)]
    assert "too noisy to rank models less than 31% apart" in noisy_copies(apart)
    assert noisy_copies([("a", "k", 30.2, (30.2, 30.2)), ("b", "k", 23.1, (23.1, 23.1))]) is None  # one round each
