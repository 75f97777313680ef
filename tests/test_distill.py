"""Output-level distillation for recovery: the loss, its gradient, resume of a distilled pruned run, bad teachers."""

import copy

import pytest
import torch
from torch import nn

from tests.conftest import IMGSZ, make_checkpoint, run_cli, run_cli_killed_after_epoch

TRAIN = ("imgsz=64", "batch=8", "workers=0", "plots=False", "exist_ok=True", "warmup_epochs=0")


@pytest.fixture(params=["yolov8n.yaml", "yolo26n.yaml"], ids=["v8n-dfl", "yolo26-end2end"])
def pair(request, tiny_data):
    """A student and its identical teacher (Kaiming weights, so outputs are not constant), and one real batch:
    a DFL head (YOLOv8) and an end-to-end head without DFL (YOLO26)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.data.batches import taylor_batches

    torch.manual_seed(0)
    student = DetectionModel(request.param, nc=5, verbose=False)
    for m in student.modules():
        if isinstance(m, nn.Conv2d) and m.weight.shape[0] > 1:
            nn.init.kaiming_normal_(m.weight)
    student.args = get_cfg(overrides={"imgsz": IMGSZ})
    student.names = dict(enumerate(CLASS_NAMES))
    batches, _ = taylor_batches(student, tiny_data, IMGSZ, 1)
    return student, copy.deepcopy(student), next(iter(batches))


def terms(model, student_out, teacher_out) -> dict:
    """The distillation terms of every branch of the head (one-to-many; and one-to-one on an end-to-end head)."""
    from types import SimpleNamespace

    from yolo_opt.arch import adapter
    from yolo_opt.distill import output_distillation

    arch = adapter(model)
    hyp = SimpleNamespace(cls=0.5, dfl=1.5, box=7.5)
    teacher = dict(arch.distill_branches(teacher_out))
    return {(name, k): v for name, branch in arch.distill_branches(student_out)
            for k, v in output_distillation(branch, teacher[name], arch.reg_max, hyp, arch.head.stride).items()}


def test_loss_is_zero_for_the_teacher_itself_and_grows_apart(pair):
    """Every term of every branch: zero for the teacher itself, positive once outputs differ (the box term too on
    YOLO26, where there are no DFL bins to compare: it was always zero there)."""
    student, _, batch = pair
    student.train()
    preds = student(batch["img"])
    same = terms(student, preds, preds)
    expected = {"kd_cls", "kd_box"}
    assert {k for _, k in same} == expected and len(same) == 2 * (2 if "one2one" in preds else 1)
    assert all(abs(float(v)) < 1e-5 for v in same.values()), same

    def moved(branch):
        return {k: v + 0.5 * torch.randn_like(v) if k in ("boxes", "scores") else v for k, v in branch.items()}

    other = {k: moved(v) for k, v in preds.items()} if "one2one" in preds else moved(preds)
    assert all(float(v) > 1e-3 for v in terms(student, other, preds).values())


def test_gradient_reaches_the_student_only(pair):
    """Through the wrapper the trainer uses: the distillation items are ~0 for identical models (BN statistics
    frozen in both), and the loss's gradient lands on the student's parameters, never on the teacher's."""
    from yolo_opt.distill.model import RecoveryDistillationModel

    student, teacher, batch = pair
    wrapper = RecoveryDistillationModel(teacher, student)
    wrapper.train()
    for m in student.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # the teacher runs in eval mode; the same statistics make the two outputs equal
    loss, items = wrapper(batch)
    assert abs(float(items["kd_cls"])) < 1e-4 and abs(float(items["kd_box"])) < 1e-4
    wrapper.zero_grad()
    loss.sum().backward()
    assert all(p.grad is None for p in wrapper.teacher_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert output_distillation_grad(wrapper, batch) > 0


def output_distillation_grad(wrapper, batch) -> float:
    """The gradient norm the distillation terms alone put on the student once it differs from the teacher."""
    with torch.no_grad():
        for p in wrapper.student_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    wrapper.zero_grad()
    with torch.no_grad():
        t = wrapper.teacher_model(batch["img"])[1]
    s = wrapper.student_model(batch["img"])
    sum(terms(wrapper.student_model, s, t).values()).backward()
    assert all(p.grad is None for p in wrapper.teacher_model.parameters())
    return float(sum(p.grad.norm() for p in wrapper.student_model.parameters() if p.grad is not None))


def _run_record(path):
    """The pruning run's record in a checkpoint (a distilled run's last.pt holds the wrapper around the student)."""
    from yolo_opt.io.checkpoint import meta, read_checkpoint
    from yolo_opt.training.trainer import RUN_KEY, student

    ckpt = read_checkpoint(path)
    return meta(student(ckpt.get("ema") or ckpt["model"]))[RUN_KEY]


def test_distilled_pruned_run_killed_resumes_and_finishes(tmp_path, v8_checkpoint, tiny_data):
    """Kill a distilled 2-step pruning run (distill=True, per-layer ratios from an analysis made in the run) right
    after epoch 1 is saved; resume=True finishes it, still distilling, with the ratios it allocated."""
    args = ["train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=3", "prune_target=0.5", "prune_steps=2",
            "distill=True",
            f"project={tmp_path}", "name=kd", *TRAIN]
    killed = run_cli_killed_after_epoch(0, *args)
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert "kd_cls" in killed.stdout + killed.stderr and "prune step 1/2" in killed.stdout + killed.stderr
    last = tmp_path / "kd" / "weights" / "last.pt"
    from yolo_opt.io.checkpoint import load_model

    allocated = _run_record(last)["layer_ratios"]
    from yolo_opt.validation import validate

    assert 0 <= validate(last, tiny_data, IMGSZ)["map"] <= 1  # the mid-run checkpoint validates (the student)
    assert (tmp_path / "kd" / "sensitivity" / "sensitivity.json").exists() and len(set(allocated.values())) > 1
    resumed = run_cli("train", f"model={last}", "resume=True")
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "Resuming training" in log and "kd_cls" in log  # the distillation wrapper came back with the run
    assert "prune step 2/2" in log and "prune step 1/2" not in log and "pruning sensitivity" not in log
    best = load_model(tmp_path / "kd" / "weights" / "best.pt")
    run = _run_record(last)
    assert run["layer_ratios"] == allocated and run["history"][-1]["macs_ratio"] == pytest.approx(0.5, abs=0.05)
    assert not hasattr(best, "teacher_model")  # the final checkpoint holds the student alone


def test_teacher_trained_at_another_size_is_refused(tmp_path, v8_checkpoint, tiny_data):
    teacher = make_checkpoint("yolov8n.yaml", tmp_path / "t.pt")  # saved with train_args imgsz=64
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune=0.3", f"teacher={teacher}",
                "imgsz=128", f"project={tmp_path}", "name=t", *[a for a in TRAIN if not a.startswith("imgsz")])
    assert r.returncode == 2 and "imgsz=64" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_teacher_with_another_head_is_refused(tmp_path, v8_checkpoint, tiny_data):
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.data import CLASS_NAMES
    from yolo_opt.io.checkpoint import save_model

    p2 = DetectionModel("yolov8n-p2.yaml", nc=5, verbose=False)  # one more output level: other anchors
    p2.names = dict(enumerate(CLASS_NAMES))
    teacher = save_model(p2, tmp_path / "p2.pt", train_args={"imgsz": IMGSZ, "task": "detect"})
    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune=0.3", f"teacher={teacher}",
                f"project={tmp_path}", "name=t", *TRAIN)
    assert r.returncode == 2 and "other anchors" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "t").exists()


def test_linear_distill_schedule_fades_to_zero_at_the_last_epoch(tmp_path, v8_checkpoint, tiny_data):
    """distill_schedule=linear: the distillation terms weigh in fully at the first epoch and not at all at the last
    (as the trainer logs them: results.csv's train/kd_* columns, already weighted)."""
    import csv

    r = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=3", "prune=0.5",
                "distill_schedule=linear", f"project={tmp_path}", "name=fade", *TRAIN)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "fade" / "results.csv").open()))
    kd = [float(row["train/kd_cls"]) + float(row["train/kd_box"]) for row in rows]
    assert len(kd) == 3 and kd[0] > 0 and kd[-1] == 0, kd
    bad = run_cli("train", f"model={v8_checkpoint}", f"data={tiny_data}", "prune=0.5", "distill_schedule=cosine")
    assert bad.returncode == 2 and "distill_schedule" in bad.stderr and "Traceback" not in bad.stderr


def test_while_behind_lets_the_student_go_once_it_reaches_the_teacher(tmp_path, v8_checkpoint, tiny_data):
    """distill_schedule=while_behind: distillation on until a validation after the last pruning step scores the
    student at or above its teacher, then off for good, across a kill and resume=True. The teacher here is the
    untrained checkpoint itself (fitness 0), so the first validation (after epoch 1, pruned at its start) already
    reaches it: kd terms at epoch 1, none at epochs 2-3 (epoch 3 after the resume, which has no validation of its
    own to decide on: the run's record carries the decision); the teacher's score is taken inside the run folder."""
    import csv

    args = ["train", f"model={v8_checkpoint}", f"data={tiny_data}", "epochs=3", "prune=0.5",
            "distill_schedule=while_behind", f"project={tmp_path}", "name=behind", *TRAIN]
    killed = run_cli_killed_after_epoch(1, *args)
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert "distillation off from epoch 2" in killed.stdout + killed.stderr
    last = tmp_path / "behind" / "weights" / "last.pt"
    assert _run_record(last)["caught_up"] == 1
    resumed = run_cli("train", f"model={last}", "resume=True", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "distillation off" not in resumed.stdout + resumed.stderr  # decided once, before the kill
    rows = list(csv.DictReader((tmp_path / "behind" / "results.csv").open()))
    kd = [float(row["train/kd_cls"]) + float(row["train/kd_box"]) for row in rows]
    assert len(kd) == 3 and kd[0] > 0 and kd[1] == kd[2] == 0, kd
    assert sorted(p.name for p in tmp_path.iterdir()) == ["behind"]  # nothing written beside the run folder
