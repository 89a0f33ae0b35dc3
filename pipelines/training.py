"""One experiment as one Kubeflow pipeline: ingest → weights → train → evaluate → gate → submit."""

# No `from __future__ import annotations` here: KFP reads the pipeline signature's real types.

from typing import NamedTuple

from kfp import dsl, kubernetes

from longtail.components.config import resolve_config
from longtail.components.evaluate import evaluate
from longtail.components.images import DEFAULT_REGISTRY, DEFAULT_TAG, retarget
from longtail.components.ingest import ingest
from longtail.components.submit import skip_submission, submit
from longtail.components.train import train
from longtail.components.weights import weights
from longtail.config import ExperimentConfig
from longtail.knobs import KNOBS, config_to_params, knob_values, pod_gpus
from longtail.tracking.env import TRACKING_PASSWORD_ENV, TRACKING_URI_ENV, TRACKING_USERNAME_ENV

# Cluster wiring (manifests/base): tracking URI and S3 endpoint from a ConfigMap, S3 keys from a
# Secret. Only the steps that read raw data from object storage get the keys; the others reach
# artifacts through the KFP launcher and MLflow through its proxied-artifact server.
CONFIG_MAP = "longtail-config"
CONFIG_MAP_ENV = {TRACKING_URI_ENV: TRACKING_URI_ENV, "S3_ENDPOINT_URL": "S3_ENDPOINT_URL"}
S3_SECRET = "longtail-s3"
S3_SECRET_ENV = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
# MLflow's basic-auth user, which the MLflow client reads from these variables; every step logs.
MLFLOW_SECRET = "longtail-mlflow"
MLFLOW_SECRET_ENV = {TRACKING_USERNAME_ENV: TRACKING_USERNAME_ENV, TRACKING_PASSWORD_ENV: TRACKING_PASSWORD_ENV}


def wire(task: dsl.PipelineTask, cpu: str, memory: str, *, registry: str, tag: str, s3_keys: bool = False,
         retries: int = 0) -> dsl.PipelineTask:
    """Image, resource requests, the shared ConfigMap and MLflow Secret, optionally the S3 Secret and pod retries.

    The image is the step's own (its component's base_image, components/images.py), moved to `registry`/`tag`.
    `retries` only where the step hands a user's error on (longtail.handed_on_error): KFP retries every
    non-zero exit, so a retried step that failed on bad input would repeat it (docs/safety.md "Fail once").
    """
    task.set_container_image(retarget(task.container_spec.image, registry, tag))
    task.set_cpu_request(cpu).set_memory_request(memory)
    kubernetes.use_config_map_as_env(task, config_map_name=CONFIG_MAP, config_map_key_to_env=CONFIG_MAP_ENV)
    kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env=MLFLOW_SECRET_ENV)
    if s3_keys:
        kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_SECRET_ENV)
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0,
                       backoff_max_duration="600s")
    return task


CHECKPOINT_MOUNT = "/checkpoints"
# What a training run gives back: the trained model and its submission, which is the gate-closed note
# (metadata "skipped": true, see longtail.submission) when the evaluation gate closed.
TrainingOutputs = NamedTuple("TrainingOutputs", [("model", dsl.Model), ("submission", dsl.Dataset)])  # noqa: UP014 (KFP docs form)


def experiment_branch(data, config, gpus, parent_run_id,
                      checkpoint_key: str, *, registry: str, tag: str,
                      checkpoint_pvc: str = "") -> tuple[dsl.PipelineTask, dsl.PipelineTask, dsl.PipelineTask]:
    """One experiment's class weights → train → evaluate, wired alike in the training pipeline and each sweep child.

    Args:
        data: the ingested train/val dataset; config: the resolved experiment config.
        gpus: the GPUs the train step requests (a pipeline parameter or a task output).
        parent_run_id: the MLflow parent run ("" for none).
        checkpoint_key: names this train task's checkpoint folder on the PVC; it must stay the same
            across pod retries and differ between train tasks of one pipeline run.
        registry, tag: where the step images live.
        checkpoint_pvc: the PVC mounted on the train step so a retried pod resumes; "" (local runs)
            keeps checkpoints in the model folder and does not retry training.

    Returns:
        The weights, train and evaluate tasks.
    """
    # Class weights from the train split's counts.
    class_weights = wire(weights(data=data, config=config), "500m", "1Gi", registry=registry, tag=tag)
    # Train on `gpus` GPUs (MirroredStrategy inside); one MLflow run from here on. A killed pod is retried
    # and resumes; a user's error is handed on to evaluate, which has no retries (docs/safety.md "Fail once").
    trained = wire(train(data=data, class_weights=class_weights.output, config=config,
                         parent_run_id=parent_run_id,
                         checkpoint_root=CHECKPOINT_MOUNT if checkpoint_pvc else "",
                         checkpoint_key=checkpoint_key if checkpoint_pvc else ""),
                   "4", "16Gi", registry=registry, tag=tag, retries=2 if checkpoint_pvc else 0)
    trained.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    if checkpoint_pvc:
        kubernetes.mount_pvc(trained, pvc_name=checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
    # Evaluate on the validation split; the result gates the submission (or ranks the sweep).
    evaluated = wire(evaluate(model=trained.outputs["model"], data=data, class_weights=class_weights.output,
                              config=config),
                     "2", "4Gi", registry=registry, tag=tag)
    return class_weights, trained, evaluated


def create_pipeline(defaults: ExperimentConfig, registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG,
                    checkpoint_pvc: str = ""):
    """Build the training pipeline with parameter defaults from an experiment config.

    Args:
        defaults: the experiment whose knobs become the pipeline's parameter defaults
            (experiments/demo.yaml for the uploaded YAML; the user's config for `longtail run`).
        registry, tag: where the step images live, set at compile time.
        checkpoint_pvc: a PersistentVolumeClaim mounted on the train step for its checkpoints, keyed
            by the pipeline run id, so a killed train pod is retried and resumes where it stopped.
            "" (local runs) keeps checkpoints in the model folder and does not retry training.

    Returns:
        The @dsl.pipeline function, ready for kfp.local or the compiler.
    """
    k = knob_values(defaults)
    k["gpus"] = pod_gpus(k["gpus"])  # train.gpus 0 is "every visible GPU"; the pod still asks for one
    base = config_to_params(defaults)

    # The knob parameters, between base_config and parent_run_id, are written from longtail.knobs by
    # `python -m longtail.pipelines.knob_signatures --write`: declare a knob in longtail.config, not here.
    @dsl.pipeline(name="longtail-training",
                  description="One long-tailed classification experiment, tracked in MLflow.")
    def training_pipeline(
        data_uri: str,
        test_uri: str,
        base_config: dict = base,
        name: str = k["name"],
        experiment: str = k["experiment"],
        image_size: int = k["image_size"],
        resize: str = k["resize"],
        clahe: bool = k["clahe"],
        white_balance: bool = k["white_balance"],
        scale: str = k["scale"],
        weight_scheme: str = k["weight_scheme"],
        weight_beta: float = k["weight_beta"],
        model_name: str = k["model_name"],
        epochs: int = k["epochs"],
        batch_size: int = k["batch_size"],
        optimizer: str = k["optimizer"],
        lr_schedule: str = k["lr_schedule"],
        lr_initial: float = k["lr_initial"],
        lr_power: float = k["lr_power"],
        label_smoothing: float = k["label_smoothing"],
        smoothing_mode: str = k["smoothing_mode"],
        gpus: int = k["gpus"],
        seed: int = k["seed"],
        min_macro_f1: float = k["min_macro_f1"],
        loss: str = k["loss"],
        loss_args: dict = k["loss_args"],
        weight_start_epoch: int = k["weight_start_epoch"],
        mixup: float = k["mixup"],
        cutmix: float = k["cutmix"],
        mix_off_last_epochs: int = k["mix_off_last_epochs"],
        weight_decay: float = k["weight_decay"],
        posthoc_tau: str = k["posthoc_tau"],
        target_prior: str = k["target_prior"],
        precision: str = k["precision"],
        ema: float = k["ema"],
        random_erasing: float = k["random_erasing"],
        jit_compile: str = k["jit_compile"],
        parent_run_id: str = "",
    ) -> TrainingOutputs:
        # Validate every knob before any work is done (the parameters named in KNOBS, passed on by name).
        knobs = {knob: value for knob, value in locals().items() if knob in KNOBS}
        resolved = wire(resolve_config(base_config=base_config, **knobs), "500m", "512Mi",
                        registry=registry, tag=tag)
        resolved.set_display_name("resolve config")
        config = resolved.output
        # Ingest the labelled images (train/val) and the unlabelled test images, from a folder or S3.
        train_data = wire(ingest(source=data_uri, config=config, unlabelled=False),
                          "2", "4Gi", registry=registry, tag=tag, s3_keys=True)
        train_data.set_display_name("ingest train/val")
        test_data = wire(ingest(source=test_uri, config=config, unlabelled=True),
                         "2", "4Gi", registry=registry, tag=tag, s3_keys=True)
        test_data.set_display_name("ingest test")
        # Weights → train → evaluate; one train task per run, so the run id keys its checkpoints.
        _, trained, evaluated = experiment_branch(
            train_data.outputs["data"], config, gpus, parent_run_id, dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            registry=registry, tag=tag, checkpoint_pvc=checkpoint_pvc)
        # The gate: submit when it opened, else record why; either branch writes the run's submission.
        # (The KFP backend resolves an artifact OneOf at runtime since kubeflow/pipelines#13437, merged before
        # the 2.17.0 release that the kind setup pins a patch of; 2.16 failed, #13436.)
        with dsl.If(evaluated.outputs["Output"] == True, name="gate-open"):  # noqa: E712 (KFP condition)
            submitted = wire(submit(model=trained.outputs["model"], test_data=test_data.outputs["data"],
                                    config=config),
                             "2", "4Gi", registry=registry, tag=tag)
        with dsl.Else(name="gate-closed"):
            skipped = wire(skip_submission(model=trained.outputs["model"],
                                           evaluation=evaluated.outputs["evaluation"]),
                           "500m", "1Gi", registry=registry, tag=tag)
        return TrainingOutputs(model=trained.outputs["model"],
                               submission=dsl.OneOf(submitted.outputs["submission"], skipped.outputs["submission"]))

    return training_pipeline


if __name__ == "__main__":
    from longtail.pipelines.compile import main

    main()
