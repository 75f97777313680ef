"""Optuna compression search on real storages: SQLite (complete, resume, fail, killed worker) and PostgreSQL."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import IMGSZ, run_cli

# tiny trials: 1 epoch at 64 px on tiny_data; the channel ratio is fixed (a GFLOPs target would be searched)
TRIAL = ("epochs=1", f"imgsz={IMGSZ}", "batch=8", "workers=0", "warmup_epochs=0", "prune=0.25", "prune_steps=1")


def _study(storage: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage)


def _tune_cmd(model, data, project, *extra) -> list[str]:
    return [sys.executable, "-m", "yolo_opt.cli", "tune", f"model={model}", f"data={data}", f"project={project}",
            *TRIAL, *extra]


def _env() -> dict:
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "True"}


def _wait_running(storage: str, name: str, n: int = 1, timeout: float = 180) -> None:
    """Poll the storage until `n` trials of the study are RUNNING (the worker is inside its trial)."""
    import optuna

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            trials = _study(storage, name).get_trials(deepcopy=False)
            if sum(t.state == optuna.trial.TrialState.RUNNING for t in trials) >= n:
                # Optuna records a trial's first heartbeat from a thread started just after the trial turns
                # RUNNING, and never fails a trial that has none: give that thread time before any kill
                time.sleep(1.5)
                return
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"no running trial in study {name} after {timeout}s")


def test_sqlite_study_completes_resumes_and_fails_killed_trial(tmp_path, v8_checkpoint, tiny_data):
    """2 trials; again with trials=3 -> exactly one more; a killed worker's trial becomes FAIL (heartbeat)."""
    import optuna

    project = tmp_path / "runs"
    args = (f"model={v8_checkpoint}", f"data={tiny_data}", f"project={project}", *TRIAL, "study=s", "heartbeat=1")
    r = run_cli("tune", *args, "trials=2")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    run_dir = project / "s"
    storage = f"sqlite:///{run_dir / 'study.db'}"
    trials = _study(storage, "s").get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(len(t.values) == 2 and t.user_attrs["latency_ms"] > 0 for t in trials)
    assert (run_dir / "trials" / "0000" / "weights" / "best.pt").exists()
    assert (run_dir / "trials" / "0001" / "weights" / "best.pt").exists()
    assert (run_dir / "pareto.png").stat().st_size > 5_000 and "| trial |" in (run_dir / "pareto.md").read_text()
    recipes = sorted((run_dir / "recipes").glob("*.yaml"))
    assert recipes and all(f"{k}:" in recipes[0].read_text() for k in ("lr0", "prune_method", "epochs", "prune", "imgsz"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["states"] == {"COMPLETE": 2} and summary["pareto"]

    r = run_cli("tune", *args, "trials=3")  # resume: exactly one more
    assert r.returncode == 0, r.stderr[-3000:]
    trials = _study(storage, "s").get_trials()
    assert [t.number for t in trials] == [0, 1, 2] and trials[2].state == optuna.trial.TrialState.COMPLETE

    worker = subprocess.Popen(_tune_cmd(v8_checkpoint, tiny_data, project, "study=s", "heartbeat=1", "trials=4"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        _wait_running(storage, "s")
        worker.send_signal(signal.SIGKILL)  # no clean-up: only the missing heartbeat tells
    finally:
        worker.wait(timeout=60)
    time.sleep(2.5)  # grace period = 2 x heartbeat
    r = run_cli("tune", *args, "trials=4")  # the budget is spent; the stale trial is failed on opening
    assert r.returncode == 0, r.stderr[-3000:]
    trials = _study(storage, "s").get_trials()
    assert len(trials) == 4 and trials[3].state == optuna.trial.TrialState.FAIL


def test_table_latency_predicts_each_trial_and_times_the_front(tmp_path, v8_checkpoint, tiny_data):
    """lat_source=table: every trial's latency read from the input model's latency table (no export per trial); the
    recipes' trials then exported and timed, beside the prediction in the report."""
    project = tmp_path / "runs"
    r = run_cli("tune", f"model={v8_checkpoint}", f"data={tiny_data}", f"project={project}", *TRIAL, "study=t",
                "trials=2", "top=1", "lat_source=table", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    run_dir = project / "t"
    st = _study(f"sqlite:///{run_dir / 'study.db'}", "t")
    trials = st.get_trials()
    assert all(t.user_attrs["latency_table"] == 1.0 and t.user_attrs["latency_ms"] > 0 for t in trials)
    summary = json.loads((run_dir / "summary.json").read_text())
    first = summary["pareto"][0]
    assert first["measured_ms"] > 0 and st.user_attrs[f"measured_ms_{first['trial']}"] == first["measured_ms"]
    exported = list((run_dir / "trials").glob("*/weights/*.onnx"))  # only the recipe's trial, to be timed
    assert exported == [run_dir / "trials" / f"{first['trial']:04d}" / "weights" / "best.onnx"]
    text = (run_dir / "pareto.md").read_text()
    assert "latency_ms (table)" in text and "measured ms" in text and "the table within" in text
    r = run_cli("tune", f"model={v8_checkpoint}", f"data={tiny_data}", f"project={project}", "study=g",
                "lat_source=table", "objectives=map,gflops")
    assert r.returncode == 2 and "use it with objectives=map,latency" in r.stderr and not (project / "g").exists()


def test_a_fixed_goal_is_not_searched():
    import optuna

    from yolo_opt.tuning.space import suggest

    trial = optuna.create_study().ask()
    assert "prune_target" not in suggest(trial, {"prune_latency": 0.5}, 3)
    assert "prune_target" in suggest(optuna.create_study().ask(), {}, 3)


def test_failing_trial_is_recorded(tmp_path, v8_checkpoint, tiny_data):
    """An exception in a trial -> FAIL with the error as a user attribute; no trial completed -> clear error."""
    import optuna

    project = tmp_path / "runs"
    r = run_cli("tune", f"model={v8_checkpoint}", f"data={tiny_data}", f"project={project}", "study=f", "trials=1",
                "epochs=1", f"imgsz={IMGSZ}", "prune_target=0.02", "objectives=map,gflops")
    assert r.returncode == 2 and "no trial of study 'f' completed" in r.stderr and "Traceback" not in r.stderr
    trials = _study(f"sqlite:///{project / 'f' / 'study.db'}", "f").get_trials()
    assert len(trials) == 1 and trials[0].state == optuna.trial.TrialState.FAIL
    assert "PruneError" in trials[0].user_attrs["error"] and "not reachable" in trials[0].user_attrs["error"]
    # a searched GFLOPs target may allocate per-layer ratios: the study made one report of the input for its trials
    report = project / "f" / "sensitivity" / "sensitivity.json"
    assert report.exists() and trials[0].user_attrs["train_keys"]["sensitivity"] == str(report)


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "is not a database URL"),
        ("redis://localhost/0", "unsupported database 'redis'"),
        ("sqlite:///{tmp}/missing/dir/study.db", "does not exist"),
        ("sqlite://", "has no file path"),
        ("postgresql://user:secret@127.0.0.1:1/db", "cannot open storage"),
    ],
)
def test_bad_storage_urls(tmp_path, url, message):
    from yolo_opt.errors import YoloOptError
    from yolo_opt.tuning import open_storage

    with pytest.raises(YoloOptError, match=message) as e:
        open_storage(url.format(tmp=tmp_path), tmp_path)
    assert "\n" not in str(e.value) and "secret" not in str(e.value)


def test_bad_storage_url_cli(tmp_path, v8_checkpoint, tiny_data):
    r = run_cli("tune", f"model={v8_checkpoint}", f"data={tiny_data}", f"project={tmp_path}", "storage=mongodb://x/y")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unsupported database" in r.stderr


@pytest.mark.skipif(not os.environ.get("YOLO_OPT_TEST_PG"),
                    reason="set YOLO_OPT_TEST_PG=postgresql://... (.ci/run starts a server) to test shared studies")
def test_postgres_two_workers_share_a_study(tmp_path, v8_checkpoint, tiny_data):
    """Two worker processes on one PostgreSQL study: unique trial numbers, both contribute, budget respected."""
    import optuna

    url, name = os.environ["YOLO_OPT_TEST_PG"], f"pg-{uuid.uuid4().hex[:8]}"
    # heartbeat=600: the first worker is paused below, and its trial must not look stale meanwhile
    extra = (f"storage={url}", f"study={name}", "trials=2", "objectives=map,gflops", "heartbeat=600")
    logs = [(tmp_path / f"{w}.log").open("w") for w in "ab"]  # files, not pipes: nobody blocks on a full pipe
    first = subprocess.Popen(_tune_cmd(v8_checkpoint, tiny_data, tmp_path / "a", *extra), env=_env(),
                             stdout=logs[0], stderr=subprocess.STDOUT)
    second = None
    try:
        _wait_running(url, name)
        # Paused inside trial 0, the first worker cannot finish it and take trial 1 before the second worker has
        # started (a tiny trial can be shorter than a worker's start-up on a busy machine): both contribute, always
        first.send_signal(signal.SIGSTOP)
        second = subprocess.Popen(_tune_cmd(v8_checkpoint, tiny_data, tmp_path / "b", *extra), env=_env(),
                                  stdout=logs[1], stderr=subprocess.STDOUT)
        _wait_running(url, name, n=2)
        first.send_signal(signal.SIGCONT)
        second.wait(timeout=600)
        first.wait(timeout=600)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for log in logs:
            log.close()
    out_first, out_second = ((tmp_path / f"{w}.log").read_text() for w in "ab")
    assert first.returncode == 0, out_first[-3000:]
    assert second.returncode == 0, out_second[-3000:]
    trials = _study(url, name).get_trials()
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # one trial each
    assert {str(tmp_path / "a"), str(tmp_path / "b")} == {t.user_attrs["dir"].rsplit("/", 3)[0] for t in trials}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tuner:Hunter2secret@127.0.0.1:1/db",  # userinfo
        "postgresql://tuner@127.0.0.1:1/db?password=Hunter2secret",  # libpq's query parameter
        "postgresql://tuner:Hunter2@secret@127.0.0.1:1/db",  # an unencoded '@': SQLAlchemy would take 'secret@...'
    ],                                                         # for the host
)
def test_storage_password_never_shown(tmp_path, v8_checkpoint, tiny_data, url):
    """No server listens on port 1: the connection fails, and neither the error nor any file shows the password."""
    project = tmp_path / "runs"
    r = run_cli("tune", f"model={v8_checkpoint}", f"data={tiny_data}", f"project={project}", f"storage={url}",
                "trials=1")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("yolo-opt: error:") and "***" in r.stderr
    for part in ("Hunter2", "secret"):
        assert part not in r.stderr + r.stdout, r.stderr
    assert not project.exists()  # nothing written before the storage opens


def test_hide_passwords_in_every_form():
    from yolo_opt.errors import StorageError, hide_passwords

    assert hide_passwords("postgresql+psycopg://u:p@ss/w:rd@db.local:5432/x?sslmode=require") == \
        "postgresql+psycopg://u:***@db.local:5432/x?sslmode=require"
    assert hide_passwords("host=db password=s3cr3t dbname=x; postgresql://h/x?user=u&password=s3cr3t&a=1") == \
        "host=db password=*** dbname=x; postgresql://h/x?user=u&password=***&a=1"
    assert hide_passwords("sqlite:////tmp/a:b/study.db and https://example.com/a:b@c") == \
        "sqlite:////tmp/a:b/study.db and https://example.com/a:b@c"
    assert "s3cr3t" not in str(StorageError("cannot open storage 'mysql://root:s3cr3t@h/db'"))
