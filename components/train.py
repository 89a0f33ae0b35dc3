"""Step 3, train: the model on one or more GPUs (MirroredStrategy), tracked as one MLflow run."""

from kfp import dsl

from longtail.components.images import image_ref


@dsl.component(base_image=image_ref("train"), install_kfp_package=False)
def train(
    data: dsl.Input[dsl.Dataset],
    class_weights: dsl.Input[dsl.Artifact],
    config: dict,
    parent_run_id: str,
    checkpoint_root: str,
    checkpoint_key: str,
    model: dsl.Output[dsl.Model],
) -> str:
    """Returns the MLflow run id; the model directory carries it on to evaluate and submit.

    checkpoint_root/checkpoint_key: a mounted volume and the pipeline run id, so a retried pod
    resumes at the epoch the killed one reached ("" keeps checkpoints inside the model folder).
    A retried train step hands a user's error on to evaluate instead of failing (returns "").
    """
    import os

    from longtail.config import config_from_dict
    from longtail.handed_on_error import handed_on
    from longtail.splits import split_path
    from longtail.tracking.runs import system_metrics_enabled
    from longtail.tracking.store import task_run_from_env, tracking_uri_from_env
    from longtail.training import checkpoint_dir_for
    from longtail.training import train as train_model

    with handed_on(model.path, retried=bool(checkpoint_root)):  # pod retries only with a checkpoint volume
        result = train_model(
            config_from_dict(config),
            split_path(data.path, "train"),
            split_path(data.path, "val"),
            model.path,
            weights_json=class_weights.path,
            tracking_uri=tracking_uri_from_env(os.environ),
            parent_run_id=parent_run_id or None,
            checkpoint_dir=checkpoint_dir_for(checkpoint_root, checkpoint_key),
            progress=False,
            task_run_id=task_run_from_env(os.environ),
            system_metrics=system_metrics_enabled(os.environ),
            source="longtail pipeline: train step",
        )
        model.metadata.update({"run_id": result.run_id, "epochs": result.epochs_run,
                               "best_val_macro_f1": result.best_val_macro_f1,
                               "final_val_macro_f1": result.final_val_macro_f1, "precision": result.precision})
        return result.run_id
    return ""
