"""What `longtail run` and `longtail sweep` read back from MLflow after a pipeline ran, and the pipeline facts they add."""

from __future__ import annotations

from dataclasses import dataclass

from longtail.tracking.names import (
    EVAL_GATE_TAG,
    EVAL_MACRO_F1,
    GATE_PASSED,
    KFP_PIPELINE_TAG,
    KFP_RUN_ID_TAG,
)


@dataclass
class RunSummary:
    """A training run as the end of `longtail run` reports it."""

    run_id: str
    experiment_id: str
    macro_f1: float | None
    gate_passed: bool


def run_summary(tracking_uri: str, run_id: str) -> RunSummary:
    """The run's validation macro-F1 (eval_macro_f1), whether its evaluation gate passed, and its experiment."""
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    return RunSummary(run_id=run_id, experiment_id=run.info.experiment_id,
                      macro_f1=run.data.metrics.get(EVAL_MACRO_F1),
                      gate_passed=run.data.tags.get(EVAL_GATE_TAG) == GATE_PASSED)


def experiment_id_of(tracking_uri: str, run_id: str) -> str:
    """The MLflow experiment a run lives in (for the UI link)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id


def tag_pipeline_run(tracking_uri: str, run_id: str, pipeline_run: str, pipeline_name: str) -> None:
    """Tag a run with the pipeline run (kfp.run_id) and pipeline (kfp.pipeline_name) it belongs to."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    client.set_tag(run_id, KFP_RUN_ID_TAG, pipeline_run)
    client.set_tag(run_id, KFP_PIPELINE_TAG, pipeline_name)
