"""MLflow wiring: where runs go, the run id a model directory carries between steps, and what runs say about themselves."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longtail.preprocessing import RUN_FILE

DEFAULT_HOME = Path(".longtail")
# One bounded budget for every MLflow HTTP call: 3 tries of at most 20 s each, 1-2 s apart (about
# a minute at worst), instead of MLflow's default of 8 tries of up to 120 s with 2-128 s backoff.
CLIENT_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
_USERINFO = re.compile(r"(?<=://)([^/@:\s]+):([^/@\s]+)@")


def bound_client_retries(environ: MutableMapping[str, str]) -> None:
    """Set CLIENT_LIMITS in `environ` where not set already (call once, at the CLI or component edge)."""
    for name, value in CLIENT_LIMITS.items():
        environ.setdefault(name, value)


def redact_credentials(text: str) -> str:
    """'http://user:pass@host' -> 'http://user:***@host', wherever a URI appears in `text`."""
    return _USERINFO.sub(r"\1:***@", text)


def default_tracking_uri(home: str | Path = DEFAULT_HOME) -> str:
    """The laptop default: a SQLite store under .longtail/ (artifacts beside it in mlruns/)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def default_artifact_root(home: str | Path = DEFAULT_HOME) -> str:
    """Artifact folder used with the default SQLite store."""
    return (Path(home).resolve() / "mlruns").as_uri()


@dataclass
class RunInfo:
    """Which MLflow run a model belongs to, so evaluate/predict log into the training run."""

    tracking_uri: str
    experiment: str
    run_id: str

    def save(self, model_dir: str | Path) -> Path:
        """Write mlflow_run.json into a model directory."""
        path = Path(model_dir) / RUN_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> RunInfo | None:
        """Read mlflow_run.json, or None when the model was trained without tracking."""
        path = Path(model_dir) / RUN_FILE
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


def resolve_tracking_uri(env_value: str | None, home: str | Path = DEFAULT_HOME) -> str:
    """MLFLOW_TRACKING_URI when set (read by the caller at the edge), else the SQLite default."""
    return env_value or default_tracking_uri(home)


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
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///"):])
            artifact_location = (db.parent / "mlruns").as_uri()
        experiment_id = client.create_experiment(name, artifact_location=artifact_location)
    set_experiment_facts(client, experiment_id)
    return experiment_id


# --- What a run and its experiment say about themselves in the MLflow UI -----------------------

# MLflow's own tag names (the UI reads them): the description box, the Source column, the commit.
DESCRIPTION_TAG = "mlflow.note.content"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
# MLflow 3 opens an experiment on its GenAI overview unless the experiment says it trains models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"
EXPERIMENT_DESCRIPTION = (
    "longtail experiments: long-tailed image classification, one run per pipeline run, ranked by "
    "validation macro-F1 (eval_macro_f1). Select runs, then Compare, to see them side by side."
)
# The pipeline run a training belongs to, on a cluster or under kfp.local.
KFP_RUN_ID_TAG = "kfp.run_id"
KFP_PIPELINE_TAG = "kfp.pipeline_name"
# The MLflow run KFP's own MLflow integration opened for the task (MLFLOW_RUN_ID in the pod).
KFP_TASK_RUN_TAG = "kfp.task_run_id"


def set_experiment_facts(client: Any, experiment_id: str) -> None:
    """Tag an experiment as model development, with a description, unless it already says otherwise."""
    exp = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, CUSTOM_MODEL_DEVELOPMENT)
    if DESCRIPTION_TAG not in exp.tags:
        client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, EXPERIMENT_DESCRIPTION)


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


def ui_hint(tracking_uri: str, experiment_id: str, port: int = 5000) -> str:
    """How to open the runs page: the URL itself for a server, `mlflow ui` plus the URL for a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return runs_page_url(tracking_uri, experiment_id)
    return (f"mlflow ui --backend-store-uri {tracking_uri} --port {port}, then open "
            f"{runs_page_url(f'http://127.0.0.1:{port}', experiment_id)}")


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


# --- Datasets: the splits a run read, as MLflow dataset inputs ---------------------------------

# Split name → MLflow's dataset context (the UI's Datasets column shows it beside the name).
DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
# MLflow's dataset digest column holds 36 characters; a fingerprint is "sha256:" + 64 hex digits.
DIGEST_CHARS = 32


@dataclass
class SplitDataset:
    """One split as MLflow records a dataset input."""

    name: str
    digest: str
    source_uri: str
    context: str
    rows: int
    classes: int
    fingerprint: str


def split_source_uri(split_h5: str | Path) -> str:
    """The raw-data URI a split was ingested from (ingest.json beside it), else the split file's own URI."""
    from longtail.ingest import INGEST_FILE

    split_h5 = Path(split_h5)
    manifest = split_h5.parent / INGEST_FILE
    source = None
    if manifest.is_file():
        source = json.loads(manifest.read_text()).get("source")
    if not source:
        return split_h5.resolve().as_uri()
    if "://" in source:
        return source
    return Path(source).resolve().as_uri()


def dataset_name(source_uri: str, split: str) -> str:
    """`<data>/<split>`: the source folder's name (its parent's when the folder is train/ or test/)."""
    parts = [p for p in source_uri.split("://", 1)[-1].rstrip("/").split("/") if p]
    label = parts[-1] if parts else "data"
    if label.lower() in ("train", "test", "images") and len(parts) > 1:
        label = parts[-2]
    if label.lower().endswith(".csv"):
        label = label[:-4]
    return f"{label}/{split}"


def split_dataset(split_h5: str | Path, split: str, n_classes: int | None = None) -> SplitDataset:
    """Describe a split for MLflow: name, digest (its source fingerprint), raw-data URI, rows, classes.

    Args:
        split: train, val or test (its MLflow context is training, validation or test).
        n_classes: for an unlabelled split, the classes of the model that reads it.
    """
    from longtail.splits import read_info

    info = read_info(split_h5)
    source = split_source_uri(split_h5)
    fingerprint = info.source_fingerprint or ""
    digest = fingerprint.split(":", 1)[-1][:DIGEST_CHARS] or "unknown"
    return SplitDataset(name=dataset_name(source, split), digest=digest, source_uri=source,
                        context=DATASET_CONTEXTS[split], rows=info.n,
                        classes=n_classes if n_classes is not None else len(info.class_names),
                        fingerprint=fingerprint)


def log_datasets(tracking_uri: str, run_id: str, datasets: list[SplitDataset]) -> None:
    """Log splits as the run's dataset inputs (MlflowClient.log_inputs), each with its context tag."""
    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for d in datasets:
        source_type = d.source_uri.split("://", 1)[0] if "://" in d.source_uri else "local"
        entity = Dataset(
            name=d.name, digest=d.digest, source_type="local" if source_type == "file" else source_type,
            source=json.dumps({"uri": d.source_uri}),
            profile=json.dumps({"num_rows": d.rows, "num_classes": d.classes, "source_fingerprint": d.fingerprint}),
        )
        inputs.append(DatasetInput(dataset=entity, tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=d.context)]))
    mlflow.MlflowClient(tracking_uri=tracking_uri).log_inputs(run_id, datasets=inputs)
