"""Optuna storage: an RDBStorage with heartbeats from a URL (SQLite by default, PostgreSQL to share a study),
with one-line errors that never show a password."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from yolo_opt.errors import StorageError, first_line, hide_passwords


def redact(url: str) -> str:
    """The URL for messages, logs and files: every password hidden (userinfo, `?password=`, an unencoded '@')."""
    return hide_passwords(str(url))


def _reason(e: BaseException, url: str) -> str:
    """First line of a driver's error, with the URL's passwords removed (the driver may echo them)."""
    from sqlalchemy.engine import make_url

    reason = first_line(getattr(e, "orig", None) or e)
    parsed = make_url(url)
    secrets = [parsed.password, *(v for k, v in parsed.query.items() if "pass" in k.lower() or k.lower() == "pwd")]
    for secret in filter(None, (str(x) for s in secrets for x in (s if isinstance(s, tuple) else (s,)))):
        if len(secret) < 4 and secret in reason:  # too short to cut out of a sentence reliably
            return type(e).__name__
        reason = reason.replace(secret, "***")
    return hide_passwords(reason)


def _on_stale_trial(study, trial) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.warning(
        f"yolo-opt tune: trial {trial.number} of study '{study.study_name}' stopped sending heartbeats "
        "(its worker was killed?); it is recorded as FAIL"
    )


def open_storage(url: str | None, run_dir: str | Path, heartbeat: int = 60):
    """An Optuna `RDBStorage` with heartbeats, from a URL (default: SQLite `study.db` in `run_dir`).

    Args:
        url: SQLAlchemy URL, e.g. `sqlite:///study.db`, `postgresql://user:password@host:5432/db`; None for the
            default SQLite file.
        run_dir: The study's run folder (holds the default SQLite file).
        heartbeat: Seconds between heartbeats of a running trial; a trial silent for twice as long is failed
            by the next worker that starts a trial.

    Raises:
        StorageError: One line naming the problem (bad URL, unreachable server, missing driver).
    """
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url is None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"
    url = str(url)
    hint = "use sqlite:///path/study.db or postgresql://user:password@host:5432/dbname"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(f"storage='{redact(url)}' is not a database URL; {hint}") from None
    if "@" in (parsed.host or ""):  # SQLAlchemy splits at the first '@': the password's tail would become the host
        raise StorageError(f"storage='{redact(url)}': a '@' in the password must be written %40 in a URL "
                           "(percent-encode it: urllib.parse.quote(password, safe=''))")
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql", "mysql"}:
        raise StorageError(f"storage='{redact(url)}': unsupported database '{backend}'; {hint}")
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise StorageError(f"storage='{redact(url)}' has no file path; a study needs a file, e.g. "
                               "sqlite:///study.db")
        if not Path(db).expanduser().resolve().parent.is_dir():
            raise StorageError(f"storage='{redact(url)}': folder {Path(db).parent} does not exist; create it or fix the path")
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if backend == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    import inspect

    params = inspect.signature(optuna.storages.RDBStorage).parameters
    kwargs["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"] = (
        _on_stale_trial
    )
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna; nothing for a user to act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except (ImportError, ModuleNotFoundError) as e:
        raise StorageError(
            f"storage='{redact(url)}': the database driver is not installed ({_reason(e, url)}); "
            "for PostgreSQL: pip install 'psycopg[binary]'"
        ) from None
    except Exception as e:
        raise StorageError(f"cannot open storage '{redact(url)}' ({_reason(e, url)}); check the URL, server and "
                           "credentials") from None


