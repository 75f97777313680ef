"""How well the latency table predicts a pruned model's time, the question behind `yolo-opt tune lat_source=table`
(each trial's latency read from the table instead of an export and a timing).

For each model: random per-group ratios (a mean drawn from 0.1..0.6, each group within 0.2 of it, as a study's trials
spread), the model pruned at them, its time predicted from the table read at the widths the pruned model has
(`LatencyEstimate.model_ms`, what a trial uses) and measured against the unpruned model by the reports' protocol (each
model in a process of its own, taking turns over rounds). What a search needs is the order: the rank correlation of
the prediction with the measurement, beside that of the GFLOPs ratio (the proxy the table replaces), and the error in
the ratio. Latency does not depend on the weights' values: the models are untrained (Kaiming-initialised).

    PYTHONPATH=. python benchmarks/tune_table.py --out runs/bench/tune_table

Rows are cached in `--out/results.json` (a rerun skips them); the table is cached per machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    for r, i in enumerate(order):
        out[i] = float(r)
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/tune_table")
    ap.add_argument("--archs", default="yolov8n,yolo11n,yolo26n")
    ap.add_argument("--n", type=int, default=8, help="pruned candidates per model")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from benchmarks.prune_latency import baseline
    from yolo_opt.bench.latency_target import deployable, table_predictor, time_models
    from yolo_opt.io.checkpoint import load_model, save_model
    from yolo_opt.prune.pruner import prune_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for arch in args.archs.split(","):
        base = baseline(arch, Path(), out, 0, args.imgsz)
        net = load_model(base)
        predictor, cost = table_predictor(net, "onnx", args.imgsz, 8)
        results.setdefault(arch, {})["table"] = cost
        base_onnx = deployable(base, "onnx", args.imgsz)
        full = predictor.model_ms(net)
        rng = random.Random(arch)
        for i in range(args.n):
            mean = rng.uniform(0.1, 0.6)
            ratios = {g: round(min(max(mean + rng.uniform(-0.2, 0.2), 0.0), 0.75), 2) for g in predictor.estimate.groups}
            if str(i) in results[arch]:
                continue
            pruned = copy.deepcopy(net)
            prune_model(pruned, 0.0, "l2", 8, layer_ratios=ratios)
            pt = save_model(pruned, out / "runs" / f"{arch}_{i}.pt")
            b, p = time_models([base_onnx, deployable(pt, "onnx", args.imgsz)], "onnx", args.imgsz, rounds=args.rounds)
            results[arch][str(i)] = {"mean_ratio": round(mean, 3), "gflops": round(predictor.estimate.ratio(ratios), 4),
                                     "predicted": round(predictor.model_ms(load_model(pt)) / full, 4),
                                     "measured": round(p["ms"] / b["ms"], 4), "ms": p["ms"], "unpruned_ms": b["ms"]}
            path.write_text(json.dumps(results, indent=1))
            print(arch, i, results[arch][str(i)], flush=True)
    (out / "report.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["| model | candidates | rank corr. table / GFLOPs with measured | mean / max abs error of the ratio, table "
             "| same, GFLOPs | table cost |", "|---|---|---|---|---|---|"]
    for arch, rows in results.items():
        cands = [v for k, v in rows.items() if k != "table"]
        if len(cands) < 3:
            continue
        meas = [c["measured"] for c in cands]
        err = [abs(c["predicted"] - c["measured"]) for c in cands]
        gerr = [abs(c["gflops"] - c["measured"]) for c in cands]
        t = rows["table"]
        lines.append(f"| {arch} | {len(cands)} | {spearman([c['predicted'] for c in cands], meas):.2f} / "
                     f"{spearman([c['gflops'] for c in cands], meas):.2f} | {statistics.mean(err):.3f} / {max(err):.3f} "
                     f"| {statistics.mean(gerr):.3f} / {max(gerr):.3f} | {t['timed']} timed in {t['seconds']:.0f} s, "
                     f"{t['reused']} reused |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
