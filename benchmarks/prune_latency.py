"""Pruning to a latency (`prune_latency=`) against pruning to GFLOPs (`prune_target=`), measured on the runtime.

For each model, runtime and target: the model pruned with `prune_latency=<target>` (per-group ratios from the
sensitivity analysis and the latency table timed here) and with `prune_target=<target>` (the same analysis, GFLOPs as
the cost), each timed against the unpruned model by the reports' protocol (each model in a process of its own, the
models taking turns over rounds, the median). Latency does not depend on the weights' values, so no fine-tuning is
needed for these rows: the models are untrained (Kaiming-initialised) except the `--accuracy` one, trained
`--base-epochs` from scratch, whose rows then rank real features.

`--accuracy ARCH` adds the accuracy rows: ARCH fine-tuned `--ft-epochs` after pruning to `prune_latency=0.5`, and
after pruning to the GFLOPs target whose *measured* latency is the same (searched: a few one-shot prunes, each
timed), both from the same baseline with the same schedule, plus the reference (the baseline trained as long).

    PYTHONPATH=. python benchmarks/prune_latency.py --out runs/bench/latency                 # the table
    PYTHONPATH=. python benchmarks/prune_latency.py --out runs/bench/latency --accuracy yolov8n

Rows are cached in `--out/results.json` (a rerun skips them; the latency table is cached per machine, so a rerun
also shows the table's reuse). Cost on 2 CPU cores: see docs/benchmarks.md#latency-target.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def baseline(arch: str, data: Path, out: Path, epochs: int, imgsz: int) -> Path:
    """ARCH trained `epochs` from its yaml on the generated set (cached); 0 epochs: untrained, Kaiming-initialised
    (Ultralytics' own init leaves an untrained net's deep activations near 0, every output its bias)."""
    done = out / "runs" / f"{arch}.pt"
    if not done.exists() and not epochs:
        import torch
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel

        from yolo_opt.data import CLASS_NAMES
        from yolo_opt.io.checkpoint import save_model

        torch.manual_seed(0)
        net = (SegmentationModel if arch.endswith("-seg") else DetectionModel)(f"{arch}.yaml", nc=len(CLASS_NAMES),
                                                                              verbose=False)
        net.names = dict(enumerate(CLASS_NAMES))
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[0] > 1:
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        done.parent.mkdir(parents=True, exist_ok=True)
        save_model(net, done, train_args={"imgsz": imgsz, "task": "segment" if arch.endswith("-seg") else "detect"})
    if not done.exists():
        from ultralytics import YOLO

        yolo = YOLO(f"{arch}.yaml")
        yolo.train(data=str(data), epochs=epochs, imgsz=imgsz, batch=16, workers=0, device="cpu",
                   project=str((out / "runs").resolve()), name=arch, exist_ok=True, plots=False, seed=0, verbose=False)
        os.replace(yolo.trainer.best, done)  # where the trainer saved it, as it says
    return done


def sensitivity(model: Path, data: Path, imgsz: int, folder: Path) -> Path:
    """The analysis both allocations share (score=err, as `prune_target=` runs make it)."""
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.options import PruneOptions
    from yolo_opt.prune.allocation import run_report

    if not (folder / "sensitivity.json").exists():
        run_report(load_model(model), PruneOptions(prune_target=0.5), data, imgsz, folder=folder)
    return folder / "sensitivity.json"


def timed_ratio(base: Path, pruned: Path, runtime: str, lat_imgsz: int, rounds: int) -> dict:
    """Pruned vs unpruned on `runtime`, by the reports' protocol."""
    from yolo_opt.bench.latency_target import deployable, time_models

    b, p = time_models([deployable(base, runtime, lat_imgsz), deployable(pruned, runtime, lat_imgsz)], runtime,
                       lat_imgsz, rounds=rounds)
    return {"measured": p["ms"] / b["ms"], "ms": p["ms"], "unpruned_ms": b["ms"], "runtime": p["runtime"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/latency")
    ap.add_argument("--archs", default="yolov8n,yolo11n,yolo26n,yolo26n-seg")
    ap.add_argument("--targets", default="0.5,0.7")
    ap.add_argument("--runtimes", default="onnx,openvino")
    ap.add_argument("--lat-imgsz", type=int, default=640)
    ap.add_argument("--imgsz", type=int, default=160, help="training and analysis size")
    ap.add_argument("--base-epochs", type=int, default=30, help="training of the --accuracy arch's baseline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--accuracy", default="", help="an arch for the accuracy rows")
    ap.add_argument("--ft-epochs", type=int, default=10)
    args = ap.parse_args()

    from yolo_opt.data import make_dataset
    from yolo_opt.options import PruneOptions
    from yolo_opt.training import prune_checkpoint

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}

    def save() -> None:
        tmp = results_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, results_file)

    sets = {}
    for task in ("detect", "segment"):
        yaml = out / f"shapes-{task}" / "data.yaml"
        sets[task] = yaml if yaml.exists() else make_dataset(yaml.parent, seed=3, n_train=300, n_val=80,
                                                                imgsz=args.imgsz, task=task)
    for arch in args.archs.split(","):
        data = sets["segment" if arch.endswith("-seg") else "detect"]
        model = baseline(arch, data, out, args.base_epochs if arch == args.accuracy else 0, args.imgsz)
        sens = sensitivity(model, data, args.imgsz, out / "sensitivity" / arch)
        for runtime in args.runtimes.split(","):
            for target in map(float, args.targets.split(",")):
                key = f"{arch}/{runtime}/{target}"
                if key in results:
                    continue
                row: dict = {}
                start = time.perf_counter()
                summary = prune_checkpoint(model, out / "pruned" / f"{arch}-{runtime}-lat{target}.pt", PruneOptions(
                    prune_latency=target, lat_runtime=runtime, lat_imgsz=args.lat_imgsz, sensitivity=str(sens)),
                    imgsz=args.imgsz, data=data)
                row["latency"] = {**summary["latency"], "seconds": round(time.perf_counter() - start, 1)}
                gflops = out / "pruned" / f"{arch}-gflops{target}.pt"
                if not gflops.exists():
                    prune_checkpoint(model, gflops, PruneOptions(prune_target=target, sensitivity=str(sens)),
                                     imgsz=args.imgsz, data=data)
                from yolo_opt.io.checkpoint import load_model
                from yolo_opt.prune.targets import count_macs

                row["gflops"] = {**timed_ratio(model, gflops, runtime, args.lat_imgsz, args.rounds),
                                 "gflops_ratio": count_macs(load_model(gflops), args.lat_imgsz)[0]
                                 / count_macs(load_model(model), args.lat_imgsz)[0]}
                results[key] = row
                save()
                print(key, json.dumps({k: {kk: v[kk] for kk in ("measured", "gflops_ratio") if kk in v}
                                       for k, v in row.items()}))
    if args.accuracy:
        accuracy_rows(args, results, save, sets["detect"], out)
    (out / "report.md").write_text(markdown(results))
    print((out / "report.md").read_text())


def accuracy_rows(args, results: dict, save, data: Path, out: Path) -> None:
    """Fine-tuned mAP of the latency-allocated and the GFLOPs-allocated model at the same measured latency."""
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.options import PruneOptions
    from yolo_opt.prune.targets import count_macs
    from yolo_opt.training import prune_checkpoint

    arch, runtime = args.accuracy, "onnx"
    model = baseline(arch, data, out, args.base_epochs, args.imgsz)
    sens = sensitivity(model, data, args.imgsz, out / "sensitivity" / arch)
    acc = results.setdefault("accuracy", {})
    lat_pt = out / "pruned" / f"{arch}-{runtime}-lat0.5.pt"
    if not lat_pt.exists():
        prune_checkpoint(model, lat_pt, PruneOptions(prune_latency=0.5, lat_imgsz=args.lat_imgsz,
                                                     sensitivity=str(sens)), imgsz=args.imgsz, data=data)
    if "lat_measured" not in acc:
        acc["lat_measured"] = timed_ratio(model, lat_pt, runtime, args.lat_imgsz, args.rounds)["measured"]
        save()
    # the GFLOPs target whose measured latency is the latency-allocated model's: secant steps from 0.5
    tries = acc.setdefault("gflops_search", [])
    goal, target = acc["lat_measured"], 0.5
    while len(tries) < 4 and not any(abs(t["measured"] - goal) <= 0.02 for t in tries):
        if tries:
            last = tries[-1]
            target = round(max(0.1, min(0.95, last["target"] * goal / last["measured"])), 3)
        pt = out / "pruned" / f"{arch}-gflops-search{len(tries)}.pt"
        prune_checkpoint(model, pt, PruneOptions(prune_target=target, sensitivity=str(sens)), imgsz=args.imgsz,
                         data=data)
        tries.append({"target": target, "pt": str(pt),
                      "measured": timed_ratio(model, pt, runtime, args.lat_imgsz, args.rounds)["measured"]})
        save()
    best = min(tries, key=lambda t: abs(t["measured"] - goal))
    from yolo_opt.training import train

    for label, pt in (("latency", lat_pt), ("gflops", Path(best["pt"])), ("reference", model)):
        if label in acc.get("map", {}):
            continue
        r = train(str(pt), data=str(data), epochs=args.ft_epochs, imgsz=args.imgsz, batch=16, workers=0,
                  device="cpu", project=str((out / "ft").resolve()), name=label, exist_ok=True, plots=False, seed=0,
                  verbose=False)
        net = load_model(r["best"])
        acc.setdefault("map", {})[label] = {"map": float(r["metrics"].get("metrics/mAP50-95(B)", 0.0)),
                                            "gflops_ratio": count_macs(net, args.lat_imgsz)[0]
                                            / count_macs(load_model(model), args.lat_imgsz)[0]}
        save()
    acc["gflops_target"], acc["gflops_measured"] = best["target"], best["measured"]
    save()


def markdown(results: dict) -> str:
    lines = ["| model | runtime | asked | prune_latency: measured (predicted) | GFLOPs kept | attempts | table: timed / "
             "reused, s | prune_target: measured latency | GFLOPs kept |", "|---|---|---|---|---|---|---|---|---|"]
    for key, row in results.items():
        if key == "accuracy":
            continue
        arch, runtime, target = key.split("/")
        lat, gf = row["latency"], row["gflops"]
        t = lat["table"]
        lines.append(f"| {arch} | {lat['runtime']} | {float(target):.2f}x | **{lat['measured']:.3f}x** "
                     f"({lat['predicted']:.3f}x) | {lat['gflops_ratio']:.3f}x | {len(lat['attempts'])} | "
                     f"{t['timed']} / {t['reused']}, {t['seconds']:.0f} | {gf['measured']:.3f}x | "
                     f"{gf['gflops_ratio']:.3f}x |")
    acc = results.get("accuracy")
    if acc and "map" in acc:
        lines += ["", "| fine-tuned from the same baseline | measured latency (ONNX Runtime) | GFLOPs kept | mAP50-95 |",
                  "|---|---|---|---|"]
        lat_map = acc["map"]
        measured = {"latency": acc["lat_measured"], "gflops": acc.get("gflops_measured"), "reference": 1.0}
        for label, text in (("latency", "prune_latency=0.5"),
                            ("gflops", f"prune_target={acc.get('gflops_target')} (same measured latency)"),
                            ("reference", "reference (unpruned)")):
            if label in lat_map:
                m = measured[label]
                lines.append(f"| {text} | {m:.3f}x | {lat_map[label]['gflops_ratio']:.3f}x | "
                             f"{lat_map[label]['map']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
