"""Pruning recovery against honest references, on the generated dataset, in one run with cached stages.

Protocol: the baseline is *converged* (trained until validation mAP stops improving, with a cap); every
pruned model is compared with the **reference** (the baseline trained the same extra epochs with the same schedule)
and with **slim models from scratch** (the same yaml at the width multiple whose GFLOPs are the nearest at or below
the pruned model's), trained (a) for the baseline's epochs + the fine-tune epochs (equal total cost) and (b) for
the fine-tune epochs only (equal extra cost). Rows: converged baseline, reference, slim models, and pruned models at
~0.7x and ~0.5x GFLOPs with each recovery variant. mAP50-95 from the Ultralytics validator (val split, training
size); GFLOPs and params at 640 px; ONNX Runtime latency at 640 px (batch 1, all cores, median of interleaved rounds).

    python benchmarks/prune.py --out runs/bench/prune                           # everything (hours on 2 CPU cores)
    python benchmarks/prune.py --archs yolov8n --targets 0.5 --variants no-kd,kd  # a subset (rows are cached)
    python benchmarks/prune.py --latency                                        # then time every cached row

`--set hard` runs the same table on the hard generated set (36 classes told apart by small markings, crowded, small
objects: `yolo-opt data kind=hard`), with `--capacity` checking that the set is capacity-limited (yolov8s >= 1.15x
yolov8n's mAP50-95, the slim yolov8n at 0.5x GFLOPs <= 0.92x). `--set transfer` is the setting users are in: each
model pre-trained on the hard set (`{arch}-pretrain`, the stand-in for COCO weights), its baseline fine-tuned to
convergence on a small set of 12 other classes, pruned from there; the slim models get the same pre-training.

Cost of the hard set (600 training images at 320 px; Ultralytics trains on one core: run one process per core,
sharing --out; a lone process with 2 threads is barely faster), an epoch on one core with two processes side by
side: yolov8n ~45 s, yolo11n ~45 s, yolo26n ~46 s; yolov8n pruned to 0.5x ~47 s with distillation (the teacher's
forward pass) and ~33 s without (the default); the slim yolov8n at 0.5x (width 0.15) ~43 s and yolov8s ~190 s
(measured on a busier machine); the transfer pre-training on 1200 hard-set images (`--n-pretrain 1200`) ~80 s, its
fine-tunes on 300 images ~20 s.
YOLOv8n's table (baseline capped at 80 epochs, reference, 0.5x and 0.7x with and without distillation, the two 0.5x
slim models) is ~4 h of one core, ~2 h on two; the capacity check's yolov8s baseline ~4.5 h of one core. At 80
epochs yolov8n is not converged on this set (+0.05 mAP50-95 over its last 30 epochs), and every further family,
target and the transfer pre-training add hours: the full table is days on 2 CPU cores, where an afternoon fits
one family's rows. The transfer rows of YOLOv8n (pre-trained 40 epochs on 1200 images, fine-tuned at most 40 on
300, reference and 0.5x without slim models) are ~2 h of one core:

    python benchmarks/prune.py --set transfer --out runs/bench/transfer --n-pretrain 1200 --base-epochs 40 \
        --patience 15 --ft-epochs 20 --archs yolov8n --targets 0.5 --variants kd,no-kd --no-slim

`--base-rounds 3` trains that baseline further in rounds of --ft-epochs (round k's baseline is round k-1's
reference: the learning-rate schedule restarts each round) and prunes from the last, rows `yolov8n-r3/...`: a
baseline nearer convergence for ~15 min of one core a round, its own reference one round on top. A longer fine-tune
from the same baseline (`--ft-epochs 40 --round-epochs 20`: rounds stay 20 epochs, the reference and the pruned
models train 40) shares --out and its baseline runs, in rows of their own (`yolov8n-r4-ft40/...`).

    python benchmarks/prune.py --set hard --out runs/bench/hard --base-epochs 80 --patience 15 --ft-epochs 20 \
        --archs yolov8n --targets 0.5,0.7 --variants kd,no-kd,kd-fade &
    python benchmarks/prune.py --set hard --out runs/bench/hard --base-epochs 80 --patience 15 --ft-epochs 20 \
        --archs yolov8n --base-rounds 3 --targets 0.5 --variants kd,no-kd --no-slim
    python benchmarks/prune.py --set hard --out runs/bench/hard --base-epochs 80 --patience 15 --ft-epochs 20 \
        --archs yolov8s --capacity
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

SENSITIVITY = "<sensitivity report>"  # the baseline's `yolo-opt sensitivity` report (score=map), made when needed
REFERENCE = "<reference weights>"  # the reference's best.pt: a teacher the student does not outgrow
# Recovery variants: yolo-opt train keys added to prune_target=<target> (the default recipe is "no-kd"; "kd" was the
# default until these tables showed distillation from the model before pruning recovering no better). Ultralytics keys
# (nbs, batch, ...) are the variant's schedule: each distinct schedule gets its own reference, the baseline trained
# the same way, so "vs reference" never credits pruning with a better schedule.
KD = {"distill": True}
VARIANTS = {
    # output distillation from the model before pruning, with the defaults: per-layer ratios from the trainer's
    # sensitivity analysis (output change), an optimizer step every batch; every row but *no-kd distils
    "kd": {**KD},
    "no-kd": {"distill": False},  # the defaults alone (distill=False spelled out: the rows predate the default)
    "kd-b8": {**KD, "batch": 8},  # an optimizer step every 8 images
    "kd-r16": {**KD, "prune_round": 16},  # channel counts in multiples of 16 (AVX-512 holds 16 floats)
    "sens-map": {**KD, "sensitivity": SENSITIVITY},  # per-layer ratios from the mAP-scored report (~20x slower)
    "uniform": {**KD, "prune_ratios": "uniform"},  # one ratio everywhere (the default before per-layer ratios)
    "uniform-no-kd": {"prune_ratios": "uniform", "distill": False},
    "uniform-nbs64": {**KD, "prune_ratios": "uniform", "nbs": 64},  # Ultralytics' accumulation to a nominal batch of 64
    "uniform-b8": {**KD, "prune_ratios": "uniform", "batch": 8},
    "kd-w0.5": {**KD, "distill_weight": 0.5},
    "kd-w2": {**KD, "distill_weight": 2.0},
    "kd-fade": {**KD, "distill_schedule": "linear"},  # the teacher's weight falls to 0 by the last epoch
    "kd-behind": {**KD, "distill_schedule": "while_behind"},  # distillation off once the student reaches the teacher
    "kd-ref": {**KD, "teacher": REFERENCE},  # taught by the reference (it costs the reference's epochs on top)
    "feature-kd": {**KD, "distill_weight": 0.0, "distill_features": 1.0},  # Ultralytics' feature distillation only
    "kd+feature": {**KD, "distill_features": 1.0},
    "kd-steps3": {**KD, "prune_steps": 3},
    "kd-bn": {**KD, "prune_method": "bn"},
    "global-nbs64": {**KD, "prune_global": True, "nbs": 64},  # one ranking across layers (uniform: not per-layer)
    "taylor-nbs64": {**KD, "prune_method": "taylor", "nbs": 64},  # Taylor scores need data: uniform ratios
    "kd-lr3x": {**KD, "optimizer": "AdamW", "lr0": 0.0033},  # 3x the AdamW rate optimizer=auto picks for nc=5
    "kd-lr0.3x": {**KD, "optimizer": "AdamW", "lr0": 0.00033},  # 0.3x it: less of what the model knew is shaken loose
}
SETS = {"shapes": (300, 200, 160), "hard": (600, 150, 320), "transfer": (300, 200, 320)}  # n_train, n_val, imgsz
TRAIN = {"imgsz": 160, "batch": 16, "workers": 0, "plots": False, "seed": 0, "deterministic": False}
# Every row of the hard sets trains with AdamW at 0.001, the rate Ultralytics' optimizer=auto picks for the 5 classes
# of the shapes set: for 36 classes it picks 0.00025 (0.002 * 5 / (4 + nc)), at which yolov8n trained from scratch
# on the hard set stood at mAP50-95 0.0015 after 12 epochs.
HARD_SCHEDULE = {"optimizer": "AdamW", "lr0": 0.001}


def train(project: Path, name: str, model: str | Path, data: Path, **kwargs) -> Path:
    """Train (or reuse / resume) a run on `data`; returns its best.pt."""
    from yolo_opt.training import train_in

    return train_in(project, name, model, **{**TRAIN, "data": str(data), **kwargs})


def new_classes(project: Path, name: str, model: Path, data: Path, **kwargs) -> Path:
    """Fine-tune `model` on a dataset of other classes with Ultralytics' own trainer (it rebuilds the head for the
    new classes); a finished run (its `.done` marker) is reused, an unfinished one restarts."""
    import shutil

    from ultralytics import YOLO

    folder = project / name
    done = folder / ".done"
    if done.exists():
        return Path(done.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    yolo = YOLO(str(model))
    yolo.train(**{**TRAIN, "data": str(data), "project": str(project), "name": name, "exist_ok": True, **kwargs})
    best = Path(yolo.trainer.best)  # where the trainer kept it
    done.write_text(str(best))
    return best


@contextlib.contextmanager
def locked(out: Path):
    """An exclusive lock on `out`, shared by every process that writes there."""
    import fcntl

    with (out / ".results.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def schedule(keys: dict) -> dict:
    """The Ultralytics keys of a variant (its training schedule); the rest are yolo-opt's."""
    from yolo_opt.options import TrainOptions

    return {k: v for k, v in keys.items() if k not in TrainOptions.specs()}


def ref_name(sched: dict) -> str:
    """The row (and run folder suffix) of the reference trained with `sched`: 'reference' for Ultralytics' defaults."""
    return "reference" + "".join(f"-{k}{v}" for k, v in sorted(sched.items()))


def ref_run(label: str, sched: dict) -> str:
    """The run folder of `label`'s reference trained with `sched` (round k's baseline is round k-1's, reused)."""
    return f"{label}-{ref_name(sched).replace('reference', 'ref')}"


def convergence(*runs: Path) -> dict:
    """Evidence that a run (or a chain of runs, each continuing the last) converged: epochs trained, best epoch, mAP
    gain over the last 30 epochs."""
    maps = [m for run in runs for m in map_curve(run).values()]
    best = max(range(len(maps)), key=maps.__getitem__)
    return {"epochs": len(maps), "best_epoch": best + 1, "best_map": maps[best],
            "gain_last30": maps[-1] - maps[max(0, len(maps) - 31)]}


def map_curve(run: Path) -> dict[int, float]:
    """Validation mAP50-95 per epoch of a run (its results.csv): the masks' where segmenting, else the boxes'."""
    import csv

    rows = list(csv.DictReader((run / "results.csv").open()))
    key = "metrics/mAP50-95(M)" if "metrics/mAP50-95(M)" in rows[0] else "metrics/mAP50-95(B)"
    return {int(r["epoch"]): float(r[key]) for r in rows}


def measure(weights: Path, data: Path, imgsz: int) -> dict:
    """Params and GFLOPs at 640 px, mAP from the Ultralytics validator at the training size, epochs trained."""
    from yolo_opt.bench import model_stats, validate

    epochs = convergence(weights.parent.parent)["epochs"]
    return {**model_stats(weights, 640), **validate(weights, data, imgsz), "weights": str(weights), "epochs": epochs}


def sensitivity_report(weights: Path, data: Path, folder: Path) -> Path:
    """The baseline's per-group pruning sensitivity scored by mAP (`yolo-opt sensitivity`, cached in `folder`)."""
    from yolo_opt.prune.sensitivity import pruning_sensitivity

    report = folder / "sensitivity.json"
    if not report.exists():
        pruning_sensitivity(weights, data, imgsz=TRAIN["imgsz"], out=folder)
    return report


def slim_yaml(arch: str, gflops: float, out: Path, nc: int = 5) -> tuple[Path, float]:
    """The arch's yaml at the width multiple whose GFLOPs (640 px) are the nearest at or below `gflops`."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel, yaml_model_load
    from ultralytics.utils import YAML

    from yolo_opt.prune import count_macs

    cfg = yaml_model_load(f"{arch}.yaml")
    depth, _, max_ch = cfg["scales"][cfg["scale"]]
    best = None
    for w in [x / 1000 for x in range(50, 260, 5)]:
        trial = {**cfg, "scales": {cfg["scale"]: [depth, w, max_ch]}, "nc": nc}
        net = (SegmentationModel if arch.endswith("-seg") else DetectionModel)(trial, verbose=False)
        g = 2 * count_macs(net, 640)[0] / 1e9
        if g <= gflops and (best is None or g > best[1]):
            best = (w, g)
    w, g = best
    path = out / f"{arch}-w{w:g}.yaml"
    YAML.save(path, {k: v for k, v in {**cfg, "scales": {cfg["scale"]: [depth, w, max_ch]}}.items()
                     if k not in {"yaml_file"}})
    return path, g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/prune")
    parser.add_argument("--archs", default="yolov8n,yolo11n", help="yaml names (segment: yolo11n-seg,yolo26n-seg)")
    parser.add_argument("--task", default="detect", choices=("detect", "segment"),
                        help="segment: the same generated images with instance polygons (use its own --out)")
    parser.add_argument("--targets", default="0.7,0.5", help="GFLOPs ratios to prune to")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--base-epochs", type=int, default=200, help="cap of the baseline (stops earlier on plateau)")
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--base-rounds", type=int, default=1,
                        help="train the baseline further in rounds of --round-epochs (each restarts the learning-rate "
                             "schedule): round k's baseline is round k-1's reference; rows as '<arch>-r<k>'")
    parser.add_argument("--round-epochs", type=int,
                        help="epochs of a --base-rounds round (default --ft-epochs); where --ft-epochs differs, the "
                             "rows are '<label>-ft<N>' and share the rounds' runs")
    parser.add_argument("--ft-epochs", type=int, default=30)
    parser.add_argument("--no-slim", action="store_true", help="skip the from-scratch slim models")
    parser.add_argument("--slim-targets", help="targets that get slim models (default: all of --targets)")
    parser.add_argument("--set", default="shapes", choices=SETS, dest="dataset",
                        help="shapes (easy), hard (capacity-limited) or transfer (pre-trained on hard, 12 new classes)")
    parser.add_argument("--n-train", type=int, help="training images (shapes 300, hard 600, transfer 300)")
    parser.add_argument("--n-val", type=int, help="validation images (shapes 200, hard 150, transfer 200)")
    parser.add_argument("--n-pretrain", type=int, default=2000, help="transfer: hard-set images of the pre-training")
    parser.add_argument("--imgsz", type=int, help="training and validation size (shapes 160, hard/transfer 320)")
    parser.add_argument("--capacity", action="store_true",
                        help="also train yolov8s as a baseline: is the set capacity-limited for yolov8n?")
    parser.add_argument("--latency", action="store_true", help="time every cached row (ONNX Runtime, 640 px)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    defaults = SETS[args.dataset]
    args.n_train, args.n_val = args.n_train or defaults[0], args.n_val or defaults[1]
    TRAIN["imgsz"] = args.imgsz = args.imgsz or defaults[2]
    if args.dataset != "shapes":
        TRAIN.update(HARD_SCHEDULE)

    from yolo_opt.data import make_dataset, read_dataset
    from yolo_opt.io.files import atomic_write_bytes

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):  # processes sharing --out: the first makes the dataset, the others reuse it
        data = make_dataset(out / "data", seed=0, n_train=args.n_train, n_val=args.n_val, imgsz=TRAIN["imgsz"],
                            task=args.task, kind=args.dataset)
        pretrain_data = None
        if args.dataset == "transfer":  # another seed: none of its images are the transfer set's
            pretrain_data = make_dataset(out / "data-pretrain", seed=1, n_train=args.n_pretrain, n_val=200,
                                         imgsz=TRAIN["imgsz"], task=args.task, kind="hard")
    nc = len(read_dataset(data)["names"])
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}

    def merge() -> None:
        # What other processes wrote (processes can share --out: Ultralytics trains on one CPU thread, so one
        # per core runs in parallel); ours win: they are newer. Called under the lock.
        on_disk = json.loads(path.read_text()) if path.exists() else {}
        results.update({k: v for k, v in on_disk.items() if k not in results})

    def save() -> None:
        with locked(out):
            merge()
            atomic_write_bytes(path, json.dumps(results, indent=1).encode())

    def row(key: str, make: Callable[[], Path], epochs: int | None = None, **extra) -> dict:
        """The cached result of `key`, or train/measure it now (`make` returns the weights). A row cached with other
        `epochs` than asked (another --ft-epochs or baseline) would be compared as if it were this one: refused."""
        with locked(out):
            merge()
        if key in results and epochs is not None and results[key].get("epochs", epochs) != epochs:
            raise SystemExit(f"{key} is cached in {path} with {results[key]['epochs']} epochs, not {epochs}: "
                             "pass another --out for another schedule length")
        if key not in results:
            results[key] = {**measure(make(), data, TRAIN["imgsz"]), **extra}
            save()
        return results[key]

    slim_targets = {float(t) for t in (args.slim_targets or args.targets).split(",")}
    def baseline(name: str, model: str, epochs: int, patience: int) -> Path:
        """A model trained from its yaml on `data`; transfer: pre-trained on the hard set first (`<yaml>-pretrain`,
        shared by the rows of one yaml), then fine-tuned on `data`'s other classes (Ultralytics' trainer: a new
        head, the rest transferred)."""
        if pretrain_data is None:
            return train(out, name, model, data, epochs=epochs, patience=patience)
        pretrained = train(out, f"{Path(model).stem}-pretrain", model, pretrain_data, epochs=args.base_epochs,
                           patience=args.patience)
        return new_classes(out, name, pretrained, data, epochs=epochs, patience=patience)

    archs = args.archs.split(",") + (["yolov8s"] if args.capacity else [])
    round_epochs = args.round_epochs or args.ft_epochs
    for arch in archs:
        base_pt = baseline(f"{arch}-base", f"{arch}.yaml", args.base_epochs, args.patience)
        label, chain = arch, [Path(base_pt).parent.parent]
        for k in range(2, args.base_rounds + 1):  # the reference's own call: round k-1's reference run is reused
            base_pt = train(out, ref_run(label, {}), base_pt, data, epochs=round_epochs)
            label = f"{arch}-r{k}"
            chain.append(Path(base_pt).parent.parent)
        if args.ft_epochs != round_epochs:  # another schedule length from the same baseline: rows and runs of its own
            label += f"-ft{args.ft_epochs}"
        base = row(f"{label}/base", partial(Path, base_pt), convergence=convergence(*chain),
                   rounds=[len(map_curve(run)) for run in chain])
        if args.capacity and arch == "yolov8s":
            continue  # only its baseline: the capacity check's
        for target in map(float, args.targets.split(",")):
            for variant in args.variants.split(","):
                keys = {"prune_target": target, **VARIANTS[variant]}
                if keys.get("sensitivity") == SENSITIVITY:
                    keys["sensitivity"] = str(sensitivity_report(base_pt, data, out / f"{label}-sensitivity"))
                sched = schedule(keys)
                ref = ref_name(sched)
                ref_row = row(f"{label}/{ref}", partial(train, out, ref_run(label, sched), base_pt, data,
                                                        epochs=args.ft_epochs, **sched), epochs=args.ft_epochs)
                if keys.get("teacher") == REFERENCE:
                    keys["teacher"] = ref_row["weights"]
                row(f"{label}/t{target}/{variant}",
                    partial(train, out, f"{label}-t{target}-{variant}", base_pt, data, epochs=args.ft_epochs, **keys),
                    epochs=args.ft_epochs, keys=keys, reference=ref)
            pruned = next((results[k]["gflops"] for k in results if k.startswith(f"{label}/t{target}/")), None)
            if args.no_slim or pruned is None or target not in slim_targets:
                continue
            yaml, _ = slim_yaml(arch, pruned, out, nc)
            for suffix, epochs in (("total", base["convergence"]["epochs"] + args.ft_epochs), ("ft", args.ft_epochs)):
                name = f"{yaml.stem}-{suffix}" + (f"-{label}" if label != arch else "")  # its own epochs: own run
                row(f"{label}/slim{target}-{suffix}", partial(baseline, name, str(yaml), epochs, 0),
                    epochs=epochs, yaml=yaml.name)
    if args.latency:
        time_rows(results, out, args.rounds)
        save()
    table = markdown(results) + capacity(results, out)
    atomic_write_bytes(out / "table.md", (table + "\n").encode())
    print(table)


def capacity(results: dict, out: Path) -> str:
    """Whether the set is capacity-limited for yolov8n: yolov8s >= 1.15x its mAP50-95, and the slim yolov8n at
    0.5x GFLOPs trained from scratch (the baseline's epochs + the fine-tune's) <= 0.92x. While yolov8s's baseline
    is unfinished, its run so far is compared with yolov8n's at equal epochs (same schedule, same cap)."""
    n, s, slim, ref = (results.get(k) for k in ("yolov8n/base", "yolov8s/base", "yolov8n/slim0.5-total",
                                               "yolov8n/reference"))
    partial_s = {} if s or not (out / "yolov8s-base" / "results.csv").exists() else map_curve(out / "yolov8s-base")
    if not n or not n["map"] or not (s or slim or partial_s):
        return ""
    lines = ["", "Capacity check (mAP50-95 vs yolov8n's baseline):"]
    if s:
        lines.append(f"- yolov8s {s['map'] / n['map']:.3f}x (needs >= 1.15: {'holds' if s['map'] >= 1.15 * n['map'] else 'MISSED'})")
    elif partial_s:
        curve_n = map_curve(out / "yolov8n-base")
        last10 = [partial_s[e] / curve_n[e] for e in sorted(set(curve_n) & set(partial_s))[-10:] if curve_n[e]]
        if last10:  # the median of the last 10 common epochs: single validations swing (one at 1.02x among 1.7-2.0x)
            lines.append(f"- yolov8s unfinished ({max(partial_s)} epochs): {statistics.median(last10):.3f}x at equal "
                         f"epochs (median of the last 10 common ones, {min(last10):.2f}-{max(last10):.2f}x; needs "
                         ">= 1.15 at convergence)")
    if slim:
        lines.append(f"- slim yolov8n at {slim['gflops'] / n['gflops']:.2f}x GFLOPs from scratch ({slim['epochs']} epochs) "
                     f"{slim['map'] / n['map']:.3f}x (needs <= 0.92: {'holds' if slim['map'] <= 0.92 * n['map'] else 'MISSED'})"
                     + (f"; {slim['map'] / ref['map']:.3f}x the reference (yolov8n, {n['epochs']} + {ref['epochs']} "
                        "epochs)" if ref else ""))
    return "\n".join(lines) + "\n"


def time_rows(results: dict, out: Path, rounds: int) -> None:
    """ONNX Runtime latency at 640 px of every row (the FP32 ONNX `yolo-opt export` writes: YOLO26's NMS-free
    output), interleaved: each round times every model once, each in a fresh process of its own (sessions sharing a
    process timed one architecture at 26.7 and 37.7 ms in one table)."""
    from yolo_opt.bench.latency import latency_in_process
    from yolo_opt.deploy.onnx import export_onnx

    onnx = {}
    for key, r in results.items():
        target = out / "onnx640" / f"{key.replace('/', '_')}.onnx"
        if not target.exists() or target.stat().st_mtime < Path(r["weights"]).stat().st_mtime:  # stale: retrained
            if not Path(r["weights"]).exists():
                print(f"{key}: {r['weights']} is gone, not timed")
                continue
            export_onnx(r["weights"], target, imgsz=640)
        onnx[key] = target
    samples: dict[str, list[float]] = {k: [] for k in onnx}
    for _ in range(rounds):
        for key, f in onnx.items():
            samples[key].append(latency_in_process([f], 640, runs=20, rounds=1, warmup=3)[0]["ms"])
    for key, s in samples.items():
        results[key]["ort_ms"] = statistics.median(s)
        results[key]["threads"] = os.cpu_count()


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "-"


def markdown(results: dict) -> str:
    """One table per architecture: GFLOPs, params, mAP50-95 vs reference and vs the input (and the masks' for a
    segmentation model), ORT latency.

    "vs reference" divides by the reference trained with the row's own schedule (rows before schedules had one:
    the default reference)."""
    lines = []
    for arch in dict.fromkeys(k.split("/")[0] for k in results):
        base, ref = results.get(f"{arch}/base"), results.get(f"{arch}/reference")
        if not base or not ref:
            continue
        masks = "mask_map" in base
        c = base["convergence"]
        # "converged" only with the evidence: the best epoch is not the last and the last 30 epochs gained < 0.01
        converged = c["best_epoch"] < c["epochs"] and c["gain_last30"] < 0.01
        rounds = base.get("rounds", [])
        restarts = (f"in {len(rounds)} rounds, {' + '.join(map(str, rounds))}, each restarting the learning-rate "
                    "schedule; " if len(rounds) > 1 else "")
        lines += [f"### {arch}", "",
                  f"Baseline: {c['epochs']} epochs ({restarts}best at {c['best_epoch']}, mAP50-95 gain over the last 30 epochs "
                  f"{c['gain_last30']:+.4f}): {'converged' if converged else '**not converged**, still improving'}; "
                  "reference = baseline + the fine-tune epochs.", "",
                  "| model | GFLOPs (640) | params | mAP50-95 | vs reference | vs input |"
                  + (" masks mAP50-95 | vs reference | vs input |" if masks else "") + " ORT ms (640) |",
                  "|---|---|---|---|---|---|" + ("---|---|---|" if masks else "") + "---|"]
        for key, r in results.items():
            if not key.startswith(f"{arch}/"):
                continue
            ms = f"{r['ort_ms']:.1f} ({r['ort_ms'] / base['ort_ms']:.2f}x)" if "ort_ms" in r and "ort_ms" in base else "-"
            own_ref = results.get(f"{arch}/" + r.get("reference", ""), ref)
            figures = "".join(f"| {r[m]:.4f} | {ratio(r[m], own_ref[m])} | {ratio(r[m], base[m])} "
                              for m in (("map", "mask_map") if masks else ("map",)))
            lines.append(f"| {key.split('/', 1)[1]} | {r['gflops']:.2f} ({r['gflops'] / base['gflops']:.2f}x) "
                         f"| {r['params'] / 1e6:.2f}M {figures}| {ms} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
