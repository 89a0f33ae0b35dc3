"""Many experiments as one Kubeflow pipeline: ingest once, train+evaluate each config in parallel, compare."""

# No `from __future__ import annotations` here: KFP reads the pipeline signature's real types.

from typing import NamedTuple

from kfp import dsl

from longtail.components.compare import compare, shared_data, start_sweep
from longtail.components.config import validate_config
from longtail.components.images import DEFAULT_REGISTRY, DEFAULT_TAG
from longtail.components.ingest import ingest
from longtail.config import ExperimentConfig, config_to_dict
from longtail.knobs import config_to_params
from longtail.pipelines.training import experiment_branch, wire
from longtail.sweep_plan import expand_grid
from longtail.tracking.names import DEFAULT_REGISTERED_MODEL

# The compiled sweep's default: the comparison docs/seed-log.md "EXP9" and "EXP11" were after.
DEFAULT_GRID = ["weights.scheme=none,inverse-frequency,effective-number"]
# What a sweep run gives back: the ranked table and the best model's submission.
SweepOutputs = NamedTuple("SweepOutputs", [("leaderboard", dsl.Markdown), ("submission", dsl.Dataset)])  # noqa: UP014 (KFP docs form)


def sweep_steps(data_uri, test_uri, configs, parent, register_as, *, parallelism: int, registry: str, tag: str,
                checkpoint_pvc: str = "") -> dsl.PipelineTask:
    """Ingest once, train+evaluate every config under the MLflow run `parent`, then compare.

    Called inside a @dsl.pipeline; `parent` is the sweep's parent run id (a task output or a
    pipeline parameter). Returns the compare task (outputs: leaderboard, submission).
    """
    # Check the configs share one data setting.
    data_config = wire(shared_data(configs=configs), "500m", "512Mi", registry=registry, tag=tag).output
    # Ingest once for every experiment.
    train_data = wire(ingest(source=data_uri, config=data_config, unlabelled=False),
                      "2", "4Gi", registry=registry, tag=tag, s3_keys=True)
    test_data = wire(ingest(source=test_uri, config=data_config, unlabelled=True),
                     "2", "4Gi", registry=registry, tag=tag, s3_keys=True)
    # Fan out: weights → train → evaluate per config, `parallelism` at a time.
    with dsl.ParallelFor(configs, parallelism=parallelism) as item:
        resolved = wire(validate_config(config=item), "500m", "512Mi", registry=registry, tag=tag)
        # Several train tasks share the run id: each keys its checkpoints by its own task id,
        # which its driver resolves once, so a retried pod still finds them.
        _, trained, evaluated = experiment_branch(
            train_data.outputs["data"], resolved.outputs["config"], resolved.outputs["gpus"], parent,
            dsl.PIPELINE_TASK_ID_PLACEHOLDER, registry=registry, tag=tag, checkpoint_pvc=checkpoint_pvc)
    # Rank, register the best model, write its submission.
    return wire(compare(models=dsl.Collected(trained.outputs["model"]),
                        gates=dsl.Collected(evaluated.outputs["Output"]), test_data=test_data.outputs["data"],
                        parent_run_id=parent, register_as=register_as),
                "2", "4Gi", registry=registry, tag=tag)


def create_sweep_pipeline(defaults: ExperimentConfig, configs: list[ExperimentConfig] | None = None,
                          registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG, parallelism: int = 2,
                          checkpoint_pvc: str = ""):
    """Build the sweep pipeline.

    Args:
        defaults: names the MLflow experiment and, crossed with DEFAULT_GRID, gives the default configs.
        configs: the experiments (the `configs` parameter's default); all share one `data` section.
        parallelism: how many train+evaluate branches run at once (fixed at compile time, as KFP requires).
        checkpoint_pvc: as in the training pipeline: each child's train step mounts it and is retried.
    """
    configs = configs or expand_grid(config_to_dict(defaults), DEFAULT_GRID)
    default_configs = [config_to_params(c) for c in configs]

    @dsl.pipeline(name="longtail-sweep",
                  description="Several experiments on one ingest, ranked by macro-F1 in one MLflow parent run.")
    def sweep_pipeline(
        data_uri: str,
        test_uri: str,
        configs: list = default_configs,
        experiment: str = defaults.experiment,
        sweep_name: str = f"{defaults.name}-sweep",
        register_as: str = DEFAULT_REGISTERED_MODEL,
    ) -> SweepOutputs:
        # Open the MLflow parent run every experiment nests under.
        parent = wire(start_sweep(configs=configs, experiment=experiment, sweep_name=sweep_name),
                      "500m", "1Gi", registry=registry, tag=tag).outputs["sweep_run_id"]
        ranked = sweep_steps(data_uri, test_uri, configs, parent, register_as, parallelism=parallelism,
                             registry=registry, tag=tag, checkpoint_pvc=checkpoint_pvc)
        return SweepOutputs(leaderboard=ranked.outputs["leaderboard"], submission=ranked.outputs["submission"])

    return sweep_pipeline


if __name__ == "__main__":
    from longtail.pipelines.compile import main

    main()
