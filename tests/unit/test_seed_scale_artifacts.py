"""At the seed's 209 classes every KFP metadata artifact stays under ML Metadata's 4 MiB gRPC limit and every
MLflow param, tag and metric is within MLflow's limits.

KFP's launcher creates one ML Metadata artifact per output, with the artifact's metadata as a protobuf
Struct; a message over 4 MiB fails the step ("Received message larger than max", kubeflow/pipelines#11949).
The artifacts here are kfp's own classes, filled exactly as the components fill them, and measured as
the protobuf the launcher sends. The MLflow side is a real train + evaluate on a 209-class scaled-LT
split with a real SQLite store, read back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from seed_scale_scores import NAMES, seed_scale_scores

from longtail.datasets import DEBIAN_FASHION_MNIST
from longtail.kfp_metrics import KFP_METADATA_BUDGET_BYTES, kfp_confusion_matrix, kfp_scalar_metrics
from longtail.scaled_lt import SEED_CLASSES

dsl = pytest.importorskip("kfp.dsl")
struct_pb2 = pytest.importorskip("google.protobuf.struct_pb2")

# grpc's default max message size, which ML Metadata's server and KFP's launcher keep (kubeflow/pipelines#11949).
MLMD_MAX_MESSAGE_BYTES = 4 * 2**20


def wire_bytes(artifact: object) -> int:
    """The artifact's metadata as the protobuf Struct the launcher sends to ML Metadata."""
    message = struct_pb2.Struct()
    message.update(artifact.metadata)  # type: ignore[attr-defined]
    return len(message.SerializeToString())


@pytest.mark.parametrize("names", [NAMES, [f"{i:03d}_" + "x" * 251 for i in range(SEED_CLASSES)]],
                         ids=["scaled-lt names", "255-character names"])
def test_evaluate_outputs_fit_ml_metadata_at_209_classes(names):
    scores = seed_scale_scores(names)
    assert int(np.count_nonzero(scores.confusion)) > 3000  # a dense matrix: the hard case
    confusion = dsl.ClassificationMetrics(name="confusion")
    cm = kfp_confusion_matrix(scores.confusion, names)
    confusion.log_confusion_matrix(cm["categories"], cm["matrix"])
    metrics = dsl.Metrics(name="metrics")
    for k, v in kfp_scalar_metrics(scores, min_macro_f1=0.5, passed=True).items():
        metrics.log_metric(k, v)
    assert cm["truncated"] and np.array(cm["matrix"]).sum() == scores.n
    for artifact in (confusion, metrics):
        assert wire_bytes(artifact) < KFP_METADATA_BUDGET_BYTES < MLMD_MAX_MESSAGE_BYTES
    # What the cap prevents: the whole 209 x 209 matrix, which grows as classes squared.
    whole = dsl.ClassificationMetrics(name="whole")
    whole.log_confusion_matrix(list(names), scores.confusion.tolist())
    assert wire_bytes(whole) > 4 * wire_bytes(confusion)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
@pytest.mark.slow
def test_every_step_artifact_and_mlflow_value_fits_at_209_classes(tmp_path: Path):
    import mlflow
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

    from longtail.class_weights import write_weights
    from longtail.config import config_from_dict
    from longtail.evaluation import evaluate
    from longtail.ingest import ingest
    from longtail.scaled_lt import make_scaled_lt
    from longtail.training import train

    data = Path(make_scaled_lt(tmp_path / "scaled", classes=SEED_CLASSES, images=1300, source_size=24,
                               test_per_class=1, workers=2)["out_dir"])
    report = ingest(str(data / "train"), tmp_path / "h5", image_size=16, val_fraction=0.3)
    assert report["n_classes"] == SEED_CLASSES
    weights = write_weights(tmp_path / "h5" / "train.h5", tmp_path / "weights.json", scheme="effective-number",
                            beta=0.999)
    # The metadata the ingest and weights components attach, filled as they fill it.
    dataset = dsl.Dataset(name="data")
    dataset.metadata.update({"n_images": report["n_images"], "n_classes": report["n_classes"],
                             "rejected": report["rejected_total"]})
    class_weights = dsl.Artifact(name="class_weights")
    class_weights.metadata.update({"scheme": weights["scheme"], "min": weights["min"], "max": weights["max"]})

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = config_from_dict({"name": "seed-scale", "model": {"name": "small_cnn", "args": {"width": 4}},
                            "weights": {"scheme": "effective-number"}, "data": {"image_size": 16},
                            "train": {"epochs": 1, "batch_size": 64, "lr": {"schedule": "constant", "initial": 0.01}}})
    result = train(cfg, tmp_path / "h5" / "train.h5", tmp_path / "h5" / "val.h5", tmp_path / "model",
                   weights_json=tmp_path / "weights.json", tracking_uri=uri, progress=False)
    ev = evaluate(result.model_dir, tmp_path / "h5" / "val.h5", tmp_path / "evaluation",
                  weights_json=tmp_path / "weights.json", tracking_uri=uri)
    assert len(ev.per_class) == SEED_CLASSES and ev.mlflow_run_id
    confusion = dsl.ClassificationMetrics(name="confusion")
    confusion.log_confusion_matrix(ev.confusion["categories"], ev.confusion["matrix"])
    metrics = dsl.Metrics(name="metrics")
    for k, v in ev.metrics.items():
        metrics.log_metric(k, v)
    for artifact in (dataset, class_weights, confusion, metrics):
        assert wire_bytes(artifact) < KFP_METADATA_BUDGET_BYTES, artifact.name

    run = mlflow.MlflowClient(tracking_uri=uri).get_run(ev.mlflow_run_id)
    assert run.data.params["data.classes"] == str(SEED_CLASSES) and "eval_macro_f1" in run.data.metrics
    assert all(len(k) <= MAX_ENTITY_KEY_LENGTH and len(v) <= MAX_PARAM_VAL_LENGTH for k, v in run.data.params.items())
    assert all(len(v) <= MAX_TAG_VAL_LENGTH for v in run.data.tags.values())
    assert all(len(k) <= MAX_ENTITY_KEY_LENGTH for k in run.data.metrics)
    logged = {a.path for a in mlflow.MlflowClient(tracking_uri=uri).list_artifacts(ev.mlflow_run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/confusion_matrix.png", "evaluation/per_class_f1.png"} <= logged
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["class_names"] == report_names(report)


def report_names(report: dict) -> list[str]:
    return sorted(report["class_counts"])
