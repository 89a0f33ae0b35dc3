"""Sweep steps: open the parent MLflow run before the fan-out, then rank and close it after."""

from typing import NamedTuple

from kfp import dsl

from longtail.components.images import image_ref


@dsl.component(base_image=image_ref("ingest"), install_kfp_package=False)
def shared_data(configs: list) -> dict:
    """The one data setting every config of the sweep shares (a clear error if they differ)."""
    from longtail.sweep_plan import shared_data_config

    return shared_data_config(configs)


@dsl.component(base_image=image_ref("evaluate"), install_kfp_package=False)
def start_sweep(configs: list, experiment: str, sweep_name: str,
                parent_run_id: str) -> NamedTuple("Sweep", [("sweep_run_id", str)]):
    """Opens the MLflow parent run (or reuses `parent_run_id`) and returns its id.

    The output has its own name (not "Output"): kfp.local resolves same-named outputs inside a
    ParallelFor to the wrong task, and validate_config's "Output" shares the loop.
    """
    import os
    from collections import namedtuple

    from longtail.comparison import start_sweep_run
    from longtail.tracking import resolve_tracking_uri, task_run_from_env

    run_id = parent_run_id or start_sweep_run(
        resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI")), experiment, sweep_name, configs,
        task_run_id=task_run_from_env(os.environ))
    return namedtuple("Sweep", ["sweep_run_id"])(run_id)


@dsl.component(base_image=image_ref("evaluate"), install_kfp_package=False)
def compare(
    models: list[dsl.Model],
    gates: list,
    test_data: dsl.Input[dsl.Dataset],
    parent_run_id: str,
    register_as: str,
    leaderboard: dsl.Output[dsl.Markdown],
    submission: dsl.Output[dsl.Dataset],
) -> str:
    """Leaderboard (Markdown + parent run), best model registered, its submission written."""
    import os
    import shutil

    from longtail.comparison import finish_sweep_run, pick_model_dir
    from longtail.prediction import predict
    from longtail.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))
    work = os.path.join(os.path.dirname(leaderboard.path), "compare")
    board = finish_sweep_run(uri, parent_run_id, work, register_as=register_as or None, gates=gates)
    shutil.copyfile(os.path.join(work, "leaderboard.md"), leaderboard.path)
    best_dir = pick_model_dir([m.path for m in models], board.best.run_id)
    predict(str(best_dir), os.path.join(test_data.path, "test.h5"), submission.path, tracking_uri=uri)
    from longtail.model_run import log_test_dataset

    log_test_dataset(str(best_dir), os.path.join(test_data.path, "test.h5"), tracking_uri=uri)
    return board.best.run_id
