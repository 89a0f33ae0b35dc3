"""Where runs go: the tracking store, its URI and client limits, experiments, and what they say about themselves."""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from longtail.credentials import redact, split_userinfo
from longtail.errors import LongtailError
from longtail.file_bounds import open_bounded
from longtail.output_paths import Input
from longtail.tracking.env import TRACKING_URI_ENV, is_postgres_uri, tracking_env_edge
from longtail.tracking.names import (
    CUSTOM_MODEL_DEVELOPMENT,
    DESCRIPTION_TAG,
    EVAL_MACRO_F1,
    EXPERIMENT_KIND_TAG,
    GIT_COMMIT_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE_TAG,
)

DEFAULT_HOME = Path(".longtail")
def tracking_uri_from_env(environ: MutableMapping[str, str], home: str | Path = DEFAULT_HOME) -> str:
    """A component's tracking URI: tracking_env_edge on `environ`, then resolve_tracking_uri of MLFLOW_TRACKING_URI."""
    tracking_env_edge(environ)
    return resolve_tracking_uri(environ.get(TRACKING_URI_ENV), home)


def default_tracking_uri(home: str | Path = DEFAULT_HOME) -> str:
    """The laptop default: a SQLite store under .longtail/ (artifacts beside it in mlruns/)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def resolve_tracking_uri(env_value: str | None, home: str | Path = DEFAULT_HOME) -> str:
    """MLFLOW_TRACKING_URI when set (read by the caller at the edge), else the SQLite default.

    A relative SQLite path (sqlite:///m.db) is made absolute here, so every step and the artifact
    folder beside it name the same file whatever their working folder; a SQLite store that cannot
    work is refused here (check_sqlite_store), before MLflow retries it for minutes. A PostgreSQL
    URI without a driver (postgresql://) gets the one longtail installs (postgres_store_uri).

    Raises:
        LongtailError: a SQLite store whose folder is missing or unwritable, or a file that is no database.
    """
    uri = postgres_store_uri(env_value or default_tracking_uri(home))
    path = uri[len(SQLITE_PREFIX):] if uri.startswith(SQLITE_PREFIX) else "/"
    if path and not path.startswith(("/", ":memory:")):
        uri = SQLITE_PREFIX + str(Path(path).resolve())
    check_sqlite_store(uri)
    return uri


SQLITE_PREFIX = "sqlite:///"
_SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLAlchemy reads a bare postgresql:// as psycopg2, which longtail does not install; psycopg 3
# (pyproject's psycopg[binary]) is postgresql+psycopg://.
POSTGRES_PREFIX = "postgresql://"
POSTGRES_DRIVER_PREFIX = "postgresql+psycopg://"
# One bounded connection attempt to a PostgreSQL store before MLflow's own, which retries a dead
# database for most of an hour (mlflow.store.db.utils.create_sqlalchemy_engine_with_retry).
POSTGRES_CONNECT_TIMEOUT_S = 5


def postgres_store_uri(uri: str) -> str:
    """`uri` with psycopg named as its driver when it is a PostgreSQL URI without one; else unchanged."""
    if uri.lower().startswith(POSTGRES_PREFIX):
        return POSTGRES_DRIVER_PREFIX + uri[len(POSTGRES_PREFIX):]
    return uri


def check_postgres_store(tracking_uri: str, timeout_s: float = POSTGRES_CONNECT_TIMEOUT_S) -> None:
    """Connect to a PostgreSQL store once, within `timeout_s`; nothing for other URIs.

    The user and password come from the URI or, once the CLI edge moved them, PGUSER/PGPASSWORD.

    Raises:
        LongtailError: naming the store (credentials hidden) and libpq's reason, on one line.
    """
    if not is_postgres_uri(tracking_uri):
        return
    try:
        import psycopg
    except ImportError:
        raise LongtailError(
            f"MLflow tracking store {redact(tracking_uri)} needs psycopg 3; pip install 'longtail[postgres]'"
        ) from None
    conninfo = "postgresql://" + tracking_uri.partition("://")[2]  # libpq's own URI form: no +driver
    try:
        psycopg.connect(conninfo, connect_timeout=max(1, round(timeout_s))).close()
    except psycopg.Error as e:
        reason = redact(" ".join(str(e).split()))
        raise LongtailError(
            f"MLflow tracking store {redact(tracking_uri)} is unreachable ({reason}); start the database, "
            "fix MLFLOW_TRACKING_URI, or unset it to use the local SQLite store under .longtail/"
        ) from None


def sqlite_store_path(tracking_uri: str | None) -> Path | None:
    """The database file of a SQLite tracking URI (sqlite:///path.db); None for any other store."""
    if not tracking_uri or not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    db = Path(tracking_uri[len(SQLITE_PREFIX):].split("?", 1)[0])
    return None if str(db) in ("", ".", ":memory:") else db


def store_input(tracking_uri: str | None) -> Input:
    """A SQLite tracking store as an input of a command: MLflow reads and rewrites it, and no output
    may replace it (output_paths.check_outputs)."""
    return Input(sqlite_store_path(tracking_uri), "MLflow tracking store")


def check_sqlite_store(tracking_uri: str) -> None:
    """Refuse a SQLite store that cannot work, before MLflow retries it for minutes or makes folders
    for it: its folder must exist and take a new file, and an existing file must be a SQLite database.
    Nothing but a regular file is opened: a FIFO would block the read of the header, and a device
    (/dev/null) is no database.

    Raises:
        LongtailError: naming the path and the fix.
    """
    db = sqlite_store_path(tracking_uri)
    if db is None:
        return
    fix = "create the folder, or fix MLFLOW_TRACKING_URI (unset, it is .longtail/mlflow.db)"
    if not db.parent.is_dir():
        raise LongtailError(f"MLflow tracking store {tracking_uri}: folder {db.parent} does not exist; {fix}")
    if db.is_dir():
        raise LongtailError(f"MLflow tracking store {tracking_uri} is a folder; name a .db file inside it")
    what = f"MLflow tracking store {tracking_uri}"
    try:
        f = open_bounded(db, what, None)  # no size bound: only the header is read
    except LongtailError as e:  # a FIFO, a device, no permission
        raise LongtailError(f"{e}; name a .db file in MLFLOW_TRACKING_URI (unset, it is .longtail/mlflow.db)") from None
    if f is not None:
        try:
            with f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise LongtailError(f"{what} cannot be read: {e.strerror or e}") from None
        if head and head != _SQLITE_MAGIC:
            raise LongtailError(
                f"MLflow tracking store {tracking_uri} is not a SQLite database (another file is there); "
                "name a new .db file"
            )
        return
    try:
        with tempfile.TemporaryFile(dir=db.parent):
            pass
    except OSError as e:
        raise LongtailError(
            f"MLflow tracking store {tracking_uri}: cannot create a file in {db.parent} ({e.strerror or e}); "
            "name a folder you can write in MLFLOW_TRACKING_URI (unset, it is .longtail/mlflow.db)"
        ) from None


def ensure_experiment(name: str, tracking_uri: str) -> str:
    """Get or create an MLflow experiment (tagged as model development, described) and return its id.

    With the SQLite default, artifacts go to .longtail/mlruns beside the database (not ./mlruns
    in whatever folder the user happens to be in); against a server, the server decides.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        experiment_id = exp.experiment_id
    else:
        artifact_location = None
        if tracking_uri.startswith(SQLITE_PREFIX):
            db = Path(tracking_uri[len(SQLITE_PREFIX):].split("?", 1)[0]).resolve()
            artifact_location = (db.parent / "mlruns").as_uri()
        try:
            experiment_id = client.create_experiment(name, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException as e:
            # Trainings started together (a sweep's parallel trials) all miss the experiment above and
            # all create it: the store keeps the first, and the others take it.
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment_id = client.get_experiment_by_name(name).experiment_id
    set_experiment_facts(client, experiment_id)
    return experiment_id


# --- What a run and its experiment say about themselves in the MLflow UI -----------------------

EXPERIMENT_DESCRIPTION = (
    "longtail experiments: long-tailed image classification, one run per pipeline run, ranked by "
    f"validation macro-F1 ({EVAL_MACRO_F1}). Select runs, then Compare, to see them side by side."
)


def set_experiment_facts(client: Any, experiment_id: str) -> None:
    """Tag an experiment as model development, with a description, unless it already says otherwise."""
    exp = client.get_experiment(experiment_id)
    for key, value in ((EXPERIMENT_KIND_TAG, CUSTOM_MODEL_DEVELOPMENT), (DESCRIPTION_TAG, EXPERIMENT_DESCRIPTION)):
        if key not in exp.tags:
            _set_missing_experiment_tag(client, experiment_id, key, value)


def _set_missing_experiment_tag(client: Any, experiment_id: str, key: str, value: str) -> None:
    """Set a tag the experiment lacked when read. Trainings started together (concurrent writers, a
    sweep's parallel trials) all find it missing and all set it; PostgreSQL refuses the second insert
    of the same key (a unique violation, where SQLite replaces), and the first writer's value stands."""
    import mlflow

    try:
        client.set_experiment_tag(experiment_id, key, value)
    except mlflow.exceptions.MlflowException:
        if key not in client.get_experiment(experiment_id).tags:
            raise


def git_commit(start: str | Path | None = None) -> str | None:
    """The commit of the git checkout holding `start` (default: this package), or None outside one."""
    import subprocess

    folder = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def source_tags(source_name: str, commit: str | None) -> dict[str, str]:
    """mlflow.source.* tags: what started the run and, where known, the commit it ran."""
    tags = {SOURCE_NAME_TAG: source_name, SOURCE_TYPE_TAG: "JOB"}
    if commit:
        tags[GIT_COMMIT_TAG] = commit
    return tags


def runs_page_url(base_url: str, experiment_id: str) -> str:
    """The MLflow UI page listing an experiment's training runs (not the UI's GenAI home page)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"


def ui_hint(tracking_uri: str, experiment_id: str, port: int = 5000, view: str = "") -> str:
    """How to open the runs page: the URL itself for a server, `mlflow ui` plus the URL for a local store.

    A server's credentials are left out: the browser asks for them. `view`: a shared view's key
    (tracking.study.study_view), opened with the page.
    """
    query = f"?viewStateShareKey={view}" if view else ""
    if tracking_uri.startswith(("http://", "https://")):
        return runs_page_url(split_userinfo(tracking_uri)[0], experiment_id) + query
    return (f"mlflow ui --backend-store-uri {tracking_uri} --port {port}, then open "
            f"{runs_page_url(f'http://127.0.0.1:{port}', experiment_id)}{query}")


# --- KFP's own MLflow integration ---------------------------------------------------------------

# Set by KFP's driver on the task's container when the API server runs the MLflow plugin with
# injectUserEnvVars (kubeflow/pipelines KEP-12862): the task's nested run, under the pipeline run's.
KFP_RUN_ENV = "MLFLOW_RUN_ID"


def task_run_from_env(environ: Mapping[str, str]) -> str | None:
    """The MLflow run the orchestrator opened for this task (MLFLOW_RUN_ID), read at an entry point."""
    return environ.get(KFP_RUN_ENV) or None


@contextlib.contextmanager
def env_run_id_hidden() -> Iterator[None]:
    """Hide MLFLOW_RUN_ID from MLflow's fluent API for the duration of the block.

    mlflow.start_run resumes MLFLOW_RUN_ID from the environment ahead of a parent_run_id it is
    given (mlflow/mlflow#15713), and fluent logging with no active run goes to it too. longtail
    names every run explicitly; with the variable hidden, no fluent call can be redirected to the
    orchestrator's task run. The variable is restored afterwards for the task's own code.
    """
    saved = os.environ.pop(KFP_RUN_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[KFP_RUN_ENV] = saved


# --- Reaching the store before any work, and the one place MLflow's global URI is set ------------

def check_tracking_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any training, when an MLflow server does not answer.

    http(s) URIs are probed (GET /health, bounded by `timeout_s`); a PostgreSQL store is connected
    to once (check_postgres_store, same bound); a SQLite store's path is checked (check_sqlite_store);
    it is created on first use.

    Raises:
        LongtailError: naming the URI and how to fix it.
    """
    check_sqlite_store(tracking_uri)
    check_postgres_store(tracking_uri, timeout_s)
    if not tracking_uri.startswith(("http://", "https://")):
        return
    shown = redact(tracking_uri)
    # user:password@ is the MLflow client's business (basic auth); /health needs none, and urllib
    # would take the password for part of the host name.
    scheme, netloc, path, _, _ = urllib.parse.urlsplit(tracking_uri)
    url = urllib.parse.urlunsplit((scheme, netloc.rpartition("@")[2], path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status, body = response.status, response.read(64)
    except urllib.error.HTTPError as e:
        status, body = e.code, b""
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = redact(str(getattr(e, "reason", e)))
        raise LongtailError(
            f"MLflow tracking server {shown} is unreachable ({reason}); start it, fix "
            "MLFLOW_TRACKING_URI, or unset it to use the local SQLite store under .longtail/"
        ) from None
    if status != 200 or body.strip() != b"OK":
        detail = " without MLflow's OK" if status == 200 else ""
        raise LongtailError(
            f"MLflow tracking server {shown} is not healthy: GET /health answered HTTP {status}{detail}; "
            "check the server's log, or fix MLFLOW_TRACKING_URI if another service answers there"
        )


def check_store(tracking_uri: str) -> None:
    """Reach the tracking store now (server health, then one query), so it fails before any step runs.

    Raises:
        LongtailError: naming the store.
    """
    import logging

    import mlflow

    check_tracking_reachable(tracking_uri)  # seconds, not the MLflow client's minutes of retries
    # A new SQLite store announces its table creation at INFO; the run's own lines say more.
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.WARNING)
    try:
        mlflow.MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot track"; say which store
        raise LongtailError(f"MLflow tracking store {redact(tracking_uri)} is not reachable: {redact(str(e))}") from e
    finally:
        db_log.setLevel(level)


@contextlib.contextmanager
def fluent_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's global tracking URI at `tracking_uri` for the block, then restore it.

    Only for the two MLflow calls that read the global URI whatever client they are given
    (mlflow.keras.log_model, and create_model_version resolving a models:/ source); everything
    else uses MlflowClient(tracking_uri=...).
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as uri_state  # where MLflow keeps the global URI

    # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ, and get_tracking_uri
    # answers a default when none is set: restore MLflow's own value and the environment exactly,
    # or a later step in this process would read a store it never chose.
    global_before, env_before = uri_state._tracking_uri, os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(global_before)
        if env_before is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = env_before
