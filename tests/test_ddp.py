"""PruneTrainer under DDP, on the CPU (gloo): one pruning decision for all ranks, rebuilt wrappers, options carried.

Ultralytics only launches DDP on GPUs, so the two-rank test builds the trainer in two `torch.distributed.run`
processes and wraps its model in DistributedDataParallel as `BaseTrainer._setup_train` does; everything after
(the pruning step, the rebuilds, a training step) is the trainer's own code.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import IMGSZ, run_python

RANK_SCRIPT = textwrap.dedent(r'''
    import hashlib, json, sys
    import torch
    import torch.distributed as dist

    def digest(model, buffers=True):
        h = hashlib.sha256()
        tensors = model.state_dict() if buffers else dict(model.named_parameters())
        for k, v in sorted(tensors.items()):
            h.update(f"{k}{tuple(v.shape)}".encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    ckpt, data, out, keys = sys.argv[1:5]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    from torch.nn.parallel import DistributedDataParallel as DDP
    from yolo_opt.training import PruneTrainer
    from yolo_opt.training.trainer import student

    trainer = PruneTrainer(overrides=dict(
        model=ckpt, data=data, epochs=2, imgsz=IMGSZ, batch=8, workers=0, plots=False, val=False, device="cpu",
        project=out, name="ddp", exist_ok=True, warmup_epochs=0, distill=False, **json.loads(keys)))
    # (distill=False: the DDP wrapper around the student itself; distillation wraps it once more)
    trainer._setup_train()
    trainer.model = DDP(trainer.model, find_unused_parameters=True)  # as BaseTrainer._setup_train wraps it
    first = next(iter(trainer.train_loader))["im_file"]  # each rank's shard: Taylor scores would differ
    before = sum(p.numel() for p in student(trainer.model).parameters())
    trainer.epoch = 0
    trainer.prune_due()
    model = student(trainer.model)
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    state = {
        "first_batch": list(first),
        "ddp": isinstance(trainer.model, DDP) and trainer.model.module is model,
        "optimizer_holds_model": in_optimizer == {id(p) for p in model.parameters()},
        "ema_params": sum(p.numel() for p in trainer.ema.ema.parameters()),
        "params": [before, sum(p.numel() for p in model.parameters())],
        "pruned": digest(model),
    }
    batch = trainer.preprocess_batch(next(iter(trainer.train_loader)))
    loss, _ = trainer.model(batch)
    trainer.scaler.scale(loss.sum()).backward()
    trainer.optimizer_step()
    # DDP keeps parameters identical; BN running statistics stay per rank (Ultralytics turns buffer syncing off)
    state["trained"] = digest(student(trainer.model), buffers=False)
    # distill_schedule=while_behind after the last step: rank 0 alone validates (the other ranks' fitness stays
    # None), decides, and every rank follows (the teacher's score is set here: no validation in this script)
    trainer.epoch = 1
    if rank == 0:
        run = trainer._run()
        run.teacher_fitness = 0.5
        trainer._store_run(run)
    decided = []
    for fitness in (0.4, 0.6):
        trainer.fitness = fitness if rank == 0 else None
        decided.append(trainer._caught_up())
    state["while_behind"] = [decided, trainer._run().caught_up]
    gathered = [None, None]
    dist.all_gather_object(gathered, state)
    if rank == 0:
        print("STATE " + json.dumps(gathered))
    dist.destroy_process_group()
''').replace("IMGSZ", str(IMGSZ))


@pytest.mark.parametrize("keys", [{"prune": 0.5, "prune_method": "taylor", "prune_batches": 2},  # scored on rank 0's data
                                  {"prune_target": 0.3}],  # per-layer ratios from rank 0's sensitivity analysis
                         ids=["taylor", "per-layer"])
def test_ddp_ranks_prune_identically_and_train(tmp_path, v8_checkpoint, tiny_data, keys):
    """Two gloo ranks: rank 0's pruning decision reaches rank 1; both then hold the same model and train in step."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    from ultralytics.utils.dist import find_free_network_port

    env = {**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(find_free_network_port()), str(script), str(v8_checkpoint), str(tiny_data), str(tmp_path / "runs"),
                        json.dumps(keys)],
                       capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("STATE "))
    rank0, rank1 = json.loads(line[len("STATE "):])
    assert rank0["first_batch"] != rank1["first_batch"]  # the ranks see different data
    assert (tmp_path / "runs" / "ddp" / "sensitivity" / "sensitivity.json").exists() == ("prune_target" in keys)
    for state in (rank0, rank1):
        assert state["ddp"] and state["optimizer_holds_model"]
        assert state["params"][1] < 0.45 * state["params"][0]  # both keep well under half of the params
        assert state["ema_params"] == state["params"][1]
    assert rank0["params"] == rank1["params"]
    assert rank0["pruned"] == rank1["pruned"]  # identical shapes and weights after the pruning step
    assert rank0["trained"] == rank1["trained"]  # and the same parameters after a DDP training step
    # rank 0's while_behind decision reached rank 1: behind at 0.4, caught up at 0.6, recorded on both
    assert rank0["while_behind"] == rank1["while_behind"] == [[False, True], 1]


def test_ddp_file_recreates_trainer_with_options(tmp_path, v8_checkpoint, tiny_data):
    """The file Ultralytics' DDP launcher writes re-creates a PruneTrainer that keeps the pruning options."""
    code = textwrap.dedent(f'''
        import json, runpy
        from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file
        from yolo_opt.training import PruneTrainer

        trainer = PruneTrainer(overrides=dict(model=r"{v8_checkpoint}", data=r"{tiny_data}", epochs=3, imgsz={IMGSZ},
                                              project=r"{tmp_path}", name="ddpfile", prune_target=0.6,
                                              prune_method="l1", prune_steps=2, sparsity=1e-4))
        file = generate_ddp_file(trainer)
        seen = {{}}
        PruneTrainer.train = lambda self: seen.update(self.opts.to_dict())  # stop where a worker would train
        try:
            runpy.run_path(file, run_name="__main__")
        finally:
            ddp_cleanup(trainer, file)
        print("OPTS " + json.dumps([trainer.opts.to_dict(), seen]))
    ''')
    r = run_python(code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    original, recreated = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("OPTS "))[5:])
    assert original["prune_target"] == 0.6 and original["prune_method"] == "l1" and original["sparsity"] == 1e-4
    assert recreated == original
