"""Options are validated once and given one way: the option object, or its keyword shortcuts, never both."""

from __future__ import annotations

import pytest

from yolo_opt.errors import ConfigError
from yolo_opt.options import ExportOptions, PruneOptions, TrainOptions


def test_resolve_takes_the_object_or_the_shortcuts():
    opts, rest = TrainOptions.resolve(None, {"prune_target": 0.5, "epochs": 3})
    assert opts.prune.prune_target == 0.5 and rest == {"epochs": 3}
    given = TrainOptions(prune=PruneOptions(prune=0.3))
    assert TrainOptions.resolve(given, {"epochs": 3}) == (given, {"epochs": 3})
    with pytest.raises(ConfigError, match="not both"):
        TrainOptions.resolve(given, {"prune_steps": 2})
    with pytest.raises(ConfigError, match="expected TrainOptions"):
        TrainOptions.resolve(PruneOptions(), {})


@pytest.mark.parametrize(("keys", "distils"), [
    ({"prune_target": 0.5}, False),  # pruning alone recovers without a teacher (the benchmarks' finding)
    ({"prune_target": 0.5, "distill": True}, True),
    ({"prune_target": 0.5, "teacher": "big.pt"}, True),  # a named teacher asks for distillation
    ({"prune_target": 0.5, "distill_schedule": "linear"}, True),  # so does any distill_* setting away from default
    ({"prune_target": 0.5, "distill_weight": 2.0}, True),
    ({"prune_target": 0.5, "distill_weight": 0.0, "distill_features": 1.0}, True),
    ({"prune_target": 0.5, "teacher": "big.pt", "distill": False}, False),  # distill=False wins
    ({}, False),
])
def test_distillation_runs_when_asked_for(keys, distils):
    assert TrainOptions.resolve(None, dict(keys))[0].distilling is distils


@pytest.mark.parametrize("call", ["export", "prune_checkpoint", "quantize_onnx", "train", "tune", "run_demo"])
def test_every_verb_refuses_an_object_with_shortcuts(tmp_path, call):
    """Each verb's one rule, checked before it reads a file: `export(m, ExportOptions(), int8=True)` went on
    without int8 once."""
    import yolo_opt
    from yolo_opt.options import DemoOptions, PTQOptions, TuneOptions
    from yolo_opt.pipeline.demo import run_demo

    missing = str(tmp_path / "missing.pt")
    calls = {
        "export": lambda: yolo_opt.export(missing, ExportOptions(), int8=True),
        "prune_checkpoint": lambda: yolo_opt.prune_checkpoint(missing, tmp_path / "o.pt", PruneOptions(prune=0.5),
                                                              prune_method="l1"),
        "quantize_onnx": lambda: yolo_opt.quantize_onnx(missing, None, None, PTQOptions(), calib="entropy"),
        "train": lambda: yolo_opt.train(missing, TrainOptions(), prune=0.5),
        "tune": lambda: yolo_opt.tune(missing, "data.yaml", TuneOptions(), trials=3),
        "run_demo": lambda: run_demo(DemoOptions(), base_epochs=2),
    }
    with pytest.raises(ConfigError, match="not both"):
        calls[call]()


def test_package_docstring_examples_build_valid_options():
    """The forms the package docstring shows are accepted as written (`prune=PruneOptions(...)` as a train
    shortcut was not, and raised)."""
    import yolo_opt

    assert "TrainOptions(prune=PruneOptions(prune_target=0.5))" in yolo_opt.__doc__
    opts, rest = TrainOptions.resolve(TrainOptions(prune=PruneOptions(prune_target=0.5)),
                                      {"data": "data.yaml", "epochs": 30})
    assert opts.prune.prune_target == 0.5 and rest == {"data": "data.yaml", "epochs": 30}
    assert ExportOptions(int8=True, imgsz=640).int8


def test_verbs_stay_verbs_after_their_subpackage_loads():
    """`train` and `tune` are verbs; their subpackages are `training` and `tuning`, so loading one never replaces the
    verb (the README's `from yolo_opt import attach, train` once gave the module `yolo_opt.train`)."""
    from tests.conftest import run_python

    r = run_python("from yolo_opt import attach, train\nfrom yolo_opt.training import PruneTrainer\n"
                   "from yolo_opt import train as again, tune\nimport yolo_opt.tuning.study\nimport yolo_opt\n"
                   "print(callable(train), callable(again), callable(tune), callable(yolo_opt.tune), "
                   "type(PruneTrainer).__name__)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "True", "True", "True", "type"]
