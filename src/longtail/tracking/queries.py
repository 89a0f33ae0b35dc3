"""What `longtail run` and `longtail sweep` read back from MLflow after a pipeline ran, and the pipeline facts they add."""

from __future__ import annotations

from dataclasses import dataclass

from longtail.tracking.names import (
    EVAL_GATE_TAG,
    EVAL_MACRO_F1,
    EVAL_MACRO_F1_HIGH,
    EVAL_MACRO_F1_LOW,
    EVAL_MACRO_F1_PLAIN,
    GATE_PASSED,
    KFP_PIPELINE_TAG,
    KFP_RUN_ID_TAG,
    TARGET_PRIOR_PARAM,
)


@dataclass
class RunSummary:
    """A training run as the end of `longtail run` reports it."""

    run_id: str
    experiment_id: str
    macro_f1: float | None
    gate_passed: bool
    macro_f1_plain: float | None = None
    interval: tuple[float, float] | None = None
    target_prior: str | None = None

    def describe_macro_f1(self) -> str:
        """'0.8560 (balanced target prior, 95% interval 0.8301-0.8790; val as drawn 0.8116)'."""
        if self.macro_f1 is None:
            return "n/a"
        detail = [f"{self.target_prior} target prior"] if self.target_prior else []
        if self.interval is not None:
            detail.append(f"95% interval {self.interval[0]:.4f}-{self.interval[1]:.4f}")
        text = f"{self.macro_f1:.4f}" + (f" ({', '.join(detail)}" if detail else "")
        if self.macro_f1_plain is not None:
            text += ("; " if detail else " (") + f"val as drawn {self.macro_f1_plain:.4f}"
        return text + (")" if detail or self.macro_f1_plain is not None else "")


def run_summary(tracking_uri: str, run_id: str) -> RunSummary:
    """The run's validation macro-F1 (eval_macro_f1), whether its evaluation gate passed, and its experiment."""
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    m = run.data.metrics
    return RunSummary(run_id=run_id, experiment_id=run.info.experiment_id,
                      macro_f1=m.get(EVAL_MACRO_F1),
                      gate_passed=run.data.tags.get(EVAL_GATE_TAG) == GATE_PASSED,
                      macro_f1_plain=m.get(EVAL_MACRO_F1_PLAIN),
                      interval=eval_interval(m),
                      target_prior=run.data.params.get(TARGET_PRIOR_PARAM))


def eval_interval(metrics: dict[str, float]) -> tuple[float, float] | None:
    """A run's bootstrap interval of eval_macro_f1 (low, high) from its metrics; None before evaluate logged one."""
    if EVAL_MACRO_F1_LOW in metrics and EVAL_MACRO_F1_HIGH in metrics:
        return metrics[EVAL_MACRO_F1_LOW], metrics[EVAL_MACRO_F1_HIGH]
    return None


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
