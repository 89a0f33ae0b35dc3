"""The MLflow model registry: versions tagged with their scores and config, moved by aliases (no stages)."""

from __future__ import annotations

from longtail.errors import LongtailError
from longtail.tracking.names import (
    CANDIDATE,
    CHAMPION,
    CONFIG_TAG,
    MODEL_ARTIFACT,
    TEST_MACRO_F1_TAG,
    VAL_MACRO_F1_TAG,
)
from longtail.tracking.store import fluent_tracking_uri

__all__ = ["CANDIDATE", "CHAMPION", "alias_version", "promote", "register_run_model", "tag_version", "version_tags"]


def version_tags(config_name: str, val_macro_f1: float | None, test_macro_f1: float | None = None) -> dict[str, str]:
    """The tags a model version carries (scores with 4 decimals; a score not measured is left out)."""
    tags = {CONFIG_TAG: config_name}
    if val_macro_f1 is not None:
        tags[VAL_MACRO_F1_TAG] = f"{val_macro_f1:.4f}"
    if test_macro_f1 is not None:
        tags[TEST_MACRO_F1_TAG] = f"{test_macro_f1:.4f}"
    return tags


def register_run_model(tracking_uri: str, run_id: str, name: str, *, alias: str, tags: dict[str, str]) -> str:
    """Register the model a training run logged as a new version of `name`, tag it and point `alias` at it.

    MLflow 3 keeps the model as a LoggedModel the run outputs (models:/<model id>); registering
    that source directly avoids MLflow's runs:/ fallback warning.

    Returns:
        The new version number (as a string).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    source = f"models:/{outputs[-1].model_id}" if outputs else f"runs:/{run_id}/{MODEL_ARTIFACT}"
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with fluent_tracking_uri(tracking_uri):  # the registry resolves models:/ sources through the global URI
        version = client.create_model_version(name, source, run_id=run_id, tags=tags,
                                              model_id=outputs[-1].model_id if outputs else None)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def tag_version(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    """Add tags to a model version (e.g. its test macro-F1 once the submission is scored)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def alias_version(tracking_uri: str, name: str, alias: str) -> str | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(tracking_uri: str, name: str, version: str, alias: str = CHAMPION) -> str | None:
    """Point `alias` (default champion) at `version` of registered model `name`.

    Returns:
        The version the alias pointed at before, or None.

    Raises:
        LongtailError: no such model or version (naming the versions that exist).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        raise LongtailError(f"no registered model {name!r} at {tracking_uri}; "
                            "register one with `longtail sweep` or `longtail run --register-as NAME`") from e
    try:
        client.get_model_version(name, str(version))
    except MlflowException as e:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        raise LongtailError(f"registered model {name!r} has no version {version} "
                            f"(versions: {', '.join(map(str, versions)) or 'none'})") from e
    before = alias_version(tracking_uri, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    return before
