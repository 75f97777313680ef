"""Prune big, beat small: a pruned `s` model against the official `n` model at the same measured latency.

For each pair (small, big), on the generated set: both trained from their yaml with the same schedule
(`--base-epochs`); the small one trained `--ft-epochs` more (the same total epochs as every pruned row: its honest
competitor) and the big one too (the reference of its own pruned rows). The big baseline is then pruned inside the
trainer with `prune_latency=` set to the small baseline's measured latency over the big one's (ONNX Runtime CPU,
`--lat-imgsz`, batch 1, each model in a process of its own, taking turns over rounds) and recovered `--ft-epochs`;
and pruned to 0.5x and 0.7x of its own latency. Each row: mAP50-95 on the head Ultralytics uses by default and, for
an end-to-end model (YOLO26), on the NMS-free one-to-one head; GFLOPs and params at 640 px; at the end, every row
timed together (the same protocol) so the latencies are one run's. `--variants` adds recovery variants of the pruned
rows (`benchmarks/prune.py`'s VARIANTS: `kd`, `feature-kd`, `kd+feature`, ...), each its own row.

    PYTHONPATH=. python benchmarks/ladder.py --out runs/bench/ladder --pairs yolo26n:yolo26s        # hours a pair
    PYTHONPATH=. python benchmarks/ladder.py --out runs/bench/ladder --pairs yolo11n:yolo11s --variants no-kd,kd

Resumable: every training phase resumes from its last.pt, finished rows are cached in `--out/results.json` (a kill
loses at most the epoch in progress). Processes may share `--out` (one per core: Ultralytics trains on one thread).
Cost: see docs/benchmarks.md (the `s` baseline is the long part: ~4.5 h of one core for yolov8s at 80 epochs on
the hard set).
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> None:
    from benchmarks import prune as bench

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/ladder")
    ap.add_argument("--pairs", default="yolo26n:yolo26s,yolo11n:yolo11s", help="small:big yaml names")
    ap.add_argument("--set", default="hard", choices=tuple(bench.SETS), dest="dataset")
    ap.add_argument("--base-epochs", type=int, default=80)
    ap.add_argument("--ft-epochs", type=int, default=20)
    ap.add_argument("--own", default="0.5,0.7", help="the big model also pruned to these ratios of its own latency")
    ap.add_argument("--variants", default="no-kd", help="recovery variants of the pruned rows (benchmarks/prune.py)")
    ap.add_argument("--lat-imgsz", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from yolo_opt.arch import adapter
    from yolo_opt.bench.latency_target import deployable, time_models
    from yolo_opt.data import make_dataset
    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.files import atomic_write_bytes
    from yolo_opt.validation import validate

    n_train, n_val, imgsz = bench.SETS[args.dataset]
    bench.TRAIN["imgsz"] = imgsz
    if args.dataset != "shapes":
        bench.TRAIN.update(bench.HARD_SCHEDULE)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with bench.locked(out):
        data = make_dataset(out / "data", seed=0, n_train=n_train, n_val=n_val, imgsz=imgsz, kind=args.dataset)
    path = out / "results.json"

    def load() -> dict:
        return json.loads(path.read_text()) if path.exists() else {}

    def row(key: str, make) -> dict:
        """The cached row `key`, or train and measure it now (processes sharing --out see each other's rows)."""
        with bench.locked(out):
            cached = load().get(key)
        if cached:
            return cached
        weights = make()
        r = {**bench.measure(weights, data, imgsz)}
        if adapter(load_model(weights)).end2end:  # the NMS-free head beside the default one
            r["map_e2e"] = validate(weights, data, imgsz, end2end=True)["map"]
        with bench.locked(out):
            results = load()
            results[key] = r
            atomic_write_bytes(path, json.dumps(results, indent=1).encode())
        print(key, json.dumps({k: v for k, v in r.items() if k != "weights"}), flush=True)
        return r

    def ratio_of(small_w: str, big_w: str) -> float:
        """The small baseline's latency over the big one's: what the big one is pruned to."""
        key = f"latency {Path(small_w).parents[1].name} / {Path(big_w).parents[1].name}"
        with bench.locked(out):
            cached = load().get(key)
        if cached:
            return cached["ratio"]
        a, b = time_models([deployable(Path(w), "onnx", args.lat_imgsz) for w in (small_w, big_w)], "onnx",
                           args.lat_imgsz, rounds=args.rounds)
        with bench.locked(out):
            results = load()
            results[key] = {"ratio": round(a["ms"] / b["ms"], 4), "small_ms": a["ms"], "big_ms": b["ms"]}
            atomic_write_bytes(path, json.dumps(results, indent=1).encode())
        return results[key]["ratio"]

    E, F = args.base_epochs, args.ft_epochs
    for pair in args.pairs.split(","):
        small, big = pair.split(":")
        base = {m: row(f"{m}/base", partial(bench.train, out, f"{m}-base", f"{m}.yaml", data, epochs=E))
                for m in (small, big)}
        for m in (small, big):  # the same total epochs as the pruned rows
            row(f"{m}/reference", partial(bench.train, out, f"{m}-ref", base[m]["weights"], data, epochs=F))
        goals = {f"at {small}": ratio_of(base[small]["weights"], base[big]["weights"])}
        goals.update({f"at {r}x": float(r) for r in args.own.split(",")})
        for label, goal in goals.items():
            for variant in args.variants.split(","):
                keys = {k: v for k, v in bench.VARIANTS[variant].items() if v not in (bench.SENSITIVITY, bench.REFERENCE)}
                row(f"{big}/pruned {label}/{variant}",
                    partial(bench.train, out, f"{big}-{label.replace(' ', '-')}-{variant}", base[big]["weights"], data,
                            epochs=F, prune_latency=round(min(goal, 0.95), 4), lat_imgsz=args.lat_imgsz, **keys))
    time_rows(out, args, load, path)
    (out / "report.md").write_text(markdown(load(), args.pairs))
    print(markdown(load(), args.pairs))


def time_rows(out: Path, args, load, path: Path) -> None:
    """Every row's ONNX timed together (one run's latencies), once all rows exist."""
    from benchmarks import prune as bench
    from yolo_opt.bench.latency_target import deployable, time_models
    from yolo_opt.io.files import atomic_write_bytes

    results = load()
    rows = [k for k, v in results.items() if isinstance(v, dict) and "weights" in v and "latency_ms" not in v]
    if not rows:
        return
    timed = time_models([deployable(Path(results[k]["weights"]), "onnx", args.lat_imgsz) for k in rows], "onnx",
                        args.lat_imgsz, rounds=args.rounds)
    with bench.locked(out):
        results = load()
        for k, t in zip(rows, timed, strict=True):
            results[k].update(latency_ms=t["ms"], latency_spread=t.get("ms_spread"), runtime=t["runtime"])
        atomic_write_bytes(path, json.dumps(results, indent=1).encode())


def markdown(results: dict, pairs: str) -> str:
    lines = ["| row | mAP50-95 (default head) | NMS-free head | vs small, same epochs | GFLOPs | params | ONNX Runtime ms |",
             "|---|---|---|---|---|---|---|"]
    for pair in pairs.split(","):
        small = pair.split(":")[0]
        bar = results.get(f"{small}/reference", {}).get("map")
        for key, r in results.items():
            if not isinstance(r, dict) or "map" not in r or key.split("/")[0] not in pair.split(":"):
                continue
            vs = f"{r['map'] / bar:.3f}x" if bar else "-"
            lines.append(f"| {key} | {r['map']:.4f} | {r.get('map_e2e', float('nan')):.4f} | {vs} | {r['gflops']:.2f} | "
                         f"{r['params'] / 1e6:.2f}M | {r.get('latency_ms', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
