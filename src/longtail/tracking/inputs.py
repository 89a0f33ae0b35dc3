"""The splits a run read, recorded as MLflow dataset inputs (the UI's Datasets column)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from longtail.errors import DataError
from longtail.file_bounds import RECORD_MAX_BYTES, read_bounded
from longtail.ingest_report import INGEST_FILE
from longtail.splits import read_info

# Split name → MLflow's dataset context (the UI's Datasets column shows it beside the name).
DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
# MLflow's dataset digest column holds 36 characters; a fingerprint is "sha256:" + 64 hex digits.
DIGEST_CHARS = 32
# Tries at recording a run's datasets when a parallel run inserts the same dataset first.
DATASET_INSERT_ATTEMPTS = 3


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
    split_h5 = Path(split_h5)
    manifest = split_h5.parent / INGEST_FILE
    text = read_bounded(manifest, f"ingest report {manifest}", RECORD_MAX_BYTES, DataError)
    record = json.loads(text) if text is not None else None
    source = record.get("source") if isinstance(record, dict) else None
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
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for attempt in range(DATASET_INSERT_ATTEMPTS):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except mlflow.exceptions.MlflowException as e:
            # Sweep children train in parallel and record the same train/val datasets at the same
            # moment: the store inserts a dataset row it did not see a moment ago and one of them
            # loses the race on the (experiment, name, digest) key: SQLite's "UNIQUE constraint failed",
            # PostgreSQL's "duplicate key value violates unique constraint". Asked again, the store
            # finds the row and only links it to this run.
            if "unique constraint" not in str(e).lower() or attempt == DATASET_INSERT_ATTEMPTS - 1:
                raise
