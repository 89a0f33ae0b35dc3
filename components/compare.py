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
def start_sweep(configs: list, experiment: str, sweep_name: str) -> NamedTuple("Sweep", [("sweep_run_id", str)]):
    """Opens the MLflow parent run and returns its id.

    The output has its own name (not "Output"): kfp.local resolves same-named outputs inside a
    ParallelFor to the wrong task, and validate_config's "Output" shares the loop.
    """
    import os
    from collections import namedtuple

    from longtail.sweep_run import start_sweep_run
    from longtail.tracking.store import task_run_from_env, tracking_uri_from_env

    run_id = start_sweep_run(tracking_uri_from_env(os.environ), experiment, sweep_name,
                             configs, task_run_id=task_run_from_env(os.environ))
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
    """Leaderboard (Markdown + parent run), best model registered, its submission written; returns its run id."""
    import os

    from longtail.splits import split_path
    from longtail.submission import ROWS_KEY
    from longtail.sweep_run import close_sweep
    from longtail.tracking.store import tracking_uri_from_env

    outcome = close_sweep(tracking_uri_from_env(os.environ), parent_run_id,
                          [m.path for m in models], split_path(test_data.path, "test"), leaderboard.path,
                          submission.path, register_as=register_as, gates=gates)
    submission.metadata.update({ROWS_KEY: outcome.rows})
    return outcome.best_run_id
