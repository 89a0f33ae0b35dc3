"""A search file's space as a Katib Experiment: the same trials as `longtail tune`, run by the cluster.

`python pipelines/compile.py` writes it for experiments/demo-search.yaml, `longtail tune --emit-katib OUT.yaml`
for any search file: the Experiment, and beside it the ConfigMap holding the trial's base config. Each
trial is a Job on the train image running `longtail trial`, wired like the pipeline's train step (its
ConfigMap, Secrets, requests and GPUs), and reports through Katib's StdOut collector the metric lines
it prints (longtail.trial_metrics). docs/architecture.md "Search on Katib" says why this shape, and
which of Katib's known pitfalls each part of it avoids.

Katib's v1beta1 API, as read from its source (kubeflow/katib, pkg/apis/controller/experiments/v1beta1
experiment_types.go and the Experiment validator, pkg/webhook/v1beta1/experiment/validator): feasible
spaces hold strings; a double or int takes min, max and a distribution (uniform, logUniform; Katib
v0.18 and later), a categorical a list; every `${trialParameters.NAME}` in the trial template is
named in trialParameters and the other way round.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from longtail.atomic_file import write_text
from longtail.components.images import DEFAULT_REGISTRY, DEFAULT_TAG, image_ref
from longtail.config import config_from_dict
from longtail.errors import ConfigError
from longtail.knobs import pod_gpus
from longtail.search_space import Dimension, yaml_flow
from longtail.splits import split_file
from longtail.sweep_plan import SearchPlan
from longtail.trial_metrics import OBJECTIVE, OBJECTIVE_HIGH, OBJECTIVE_LOW, PRUNE_AFTER_PERCENT

API_VERSION = "kubeflow.org/v1beta1"
# The namespace of the pipeline's step pods, where its ConfigMap and Secrets live (manifests/base/kfp-wiring),
# and where Katib's standalone install runs.
NAMESPACE = "kubeflow"
ALGORITHMS = ("tpe", "hyperband")
EARLY_STOPPING = "medianstop"
MEDIANSTOP_MIN_TRIALS = 3  # finished trials before medianstop stops any (Katib's default, said aloud)
# Katib's hyperband spends this config field as its budget (its `resource_name`), with its default eta.
HYPERBAND_RESOURCE, HYPERBAND_ETA = "train.epochs", 3
# Where a search's ingested splits are looked for by default: `longtail ingest SRC s3://longtail-data/splits/NAME`.
DATA_PREFIX = "s3://longtail-data/splits"

TRIAL_CONTAINER = "trial"
TRIAL_NAME_PARAMETER = "trialName"  # the Katib trial's own name: its MLflow run's name
CONFIG_VOLUME, CONFIG_MOUNT, CONFIG_FILE = "trial-config", "/etc/longtail/trial", "config.yaml"
# The images' user and home (images/base/Dockerfile: uid 10001, WORKDIR /home/longtail); the root
# filesystem is read-only, so home and /tmp are emptyDirs and the trial writes under home.
RUN_AS, HOME = 10001, "/home/longtail"
TRIAL_OUT = f"{HOME}/trial"
# The pipeline's train step asks for these (pipelines/training.py, experiment_branch); tests/unit/test_katib.py
# compares them with its compiled golden file.
TRIAL_CPU, TRIAL_MEMORY, GPU_RESOURCE = "4", "16Gi", "nvidia.com/gpu"
# Pod Security "restricted": non-root, no privilege escalation, every capability dropped, RuntimeDefault seccomp.
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                      "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
# Istio's injector would add a proxy that never exits, so the trial's pod would never complete: off by
# its label (Istio's current form, which Katib v0.19 itself moved to) and its annotation (older Istio).
NO_ISTIO = {"sidecar.istio.io/inject": "false"}
# Where the trial Job departs from checkov's defaults, and why (the form manifests/ uses for its own Jobs).
CHECKOV_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_43=The train image is built by make images and tagged with the package version "
                        "(components/images.py); it has no registry digest before it is pushed.",
    "checkov.io/skip2": "CKV_K8S_15=Images loaded into kind are in no registry, so they must not be pulled; "
                        "the tag is the immutable package version.",
    "checkov.io/skip3": "CKV_K8S_11=Training uses every core it gets; its request reserves them, as the "
                        "pipeline's train step does, and a CPU limit would only throttle it.",
    "checkov.io/skip4": "CKV_K8S_35=The S3 and MLflow clients read their credentials from the environment; the "
                        "values come from Secrets, as the pipeline's steps get them.",
    "checkov.io/skip5": "CKV2_K8S_6=Trials run beside the pipeline's steps in its namespace, which has no policies "
                        "of its own; MinIO and MLflow admit them by that namespace's label (manifests/base/network).",
}
# Katib's Job conditions, as its trial templates write them (gjson over the Job's status).
JOB_SUCCEEDED = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
# What may not appear in a value Katib writes into the trial's shell command: it substitutes the value
# into the template's JSON text (a quote or backslash breaks it), the command single-quotes it, and
# Kubernetes expands $(VAR) in a container's args.
_UNSAFE = re.compile(r"['\"\\$\x00-\x1f\x7f]")
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # Katib's rule for an Experiment's name
MAX_NAME = 40  # trial names add a suffix, and a Job's labels take at most 63 characters


class Quoted(str):
    """Text YAML must keep quoted: a feasible space's number or choice, which Katib's API takes as a
    string and a YAML reader would otherwise read as a number (`1e-05`, `0.5`, `true`). katib_yaml
    writes it; yaml.safe_dump refuses it."""


class _Dumper(yaml.SafeDumper):
    """Quoted as '...', and the trial's config file as a literal block, readable in the ConfigMap."""


_Dumper.add_representer(Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="'"))
_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v,
                                                             style="|" if "\n" in v else None))


def katib_experiment(plan: SearchPlan, *, parallelism: int = 2, max_trials: int = 12, algorithm: str = "tpe",
                     seed: int | None = None, data: str | None = None, gpus: int | None = None,
                     registry: str | None = None, tag: str | None = None,
                     prune_after: int = PRUNE_AFTER_PERCENT) -> dict[str, Any]:
    """The Katib Experiment that searches `plan`'s space with trials of `longtail trial`.

    Args:
        plan: the search file read (longtail.sweep_plan.load_search): its base config and space.
        parallelism: trials at once (parallelTrialCount); max_trials: trials in all (maxTrialCount).
        algorithm: "tpe", or "hyperband" (its budget is train.epochs, which the space must search as an int).
        seed: TPE's random_state (Katib's hyperband takes none); None leaves Katib to choose.
        data: the folder or s3:// prefix holding the ingested train.h5 and val.h5
            (default: s3://longtail-data/splits/<name>).
        gpus: GPUs per trial pod (0: none, as on kind); None asks as the pipeline's train step does, for
            the config's train.gpus, and for one where that is 0 ("every visible GPU").
        registry, tag: where the train image lives (default: components/images.py).
        prune_after: medianstop's start, a percent (1-99) of the shortest schedule (`tune --prune-after`).

    Returns:
        The Experiment as a mapping, ready for YAML.

    Raises:
        ConfigError: an argument out of range, an algorithm Katib is not asked for here, a space hyperband
            cannot spend, or a value that could not pass through Katib's substitution unchanged.
    """
    _check_count("parallelism", parallelism)
    _check_count("max_trials", max_trials)
    if isinstance(prune_after, bool) or not isinstance(prune_after, int) or not 1 <= prune_after <= 99:
        raise ConfigError(f"prune_after is a percent of the shortest schedule, 1 to 99, got {prune_after!r}")
    if parallelism > max_trials:
        raise ConfigError(f"parallelism ({parallelism}) must not exceed max_trials ({max_trials}): "
                          "Katib refuses parallelTrialCount > maxTrialCount")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be a whole number >= 0 (TPE's random_state), got {seed!r}")
    name = experiment_name(plan.name)
    dims = plan.space.dimensions
    spec = {
        # The balanced val macro-F1 a trial prints; `latest` takes the evaluation's figure, its last line.
        "objective": {
            "type": "maximize",
            "objectiveMetricName": OBJECTIVE,
            "additionalMetricNames": [OBJECTIVE_LOW, OBJECTIVE_HIGH],
            "metricStrategies": [{"name": m, "value": "latest"} for m in (OBJECTIVE, OBJECTIVE_LOW, OBJECTIVE_HIGH)],
        },
        "algorithm": _algorithm(algorithm, dims, parallelism, seed),
        "earlyStopping": _early_stopping(plan, prune_after),
        "parallelTrialCount": parallelism,
        "maxTrialCount": max_trials,
        "maxFailedTrialCount": min(3, max_trials),
        # A finished search keeps no suggestion pod running.
        "resumePolicy": "Never",
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "parameters": [katib_parameter(d) for d in dims],
        "trialTemplate": _trial_template(plan, name, dims, data, gpus, registry, tag),
    }
    return {"apiVersion": API_VERSION, "kind": "Experiment",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": _labels("longtail-search")},
            "spec": spec}


def trial_config_map(plan: SearchPlan) -> dict[str, Any]:
    """The ConfigMap every trial reads its base config from: the search file's base and set, resolved."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config_map_name(plan.name), "namespace": NAMESPACE,
                         "labels": _labels("longtail-search")},
            "data": {CONFIG_FILE: yaml.safe_dump(plan.base, sort_keys=False, default_flow_style=False)}}


def katib_documents(plan: SearchPlan, **kwargs: Any) -> list[dict[str, Any]]:
    """The trial's ConfigMap, then the Experiment (katib_experiment's keyword arguments): what `kubectl apply -f` takes."""
    return [trial_config_map(plan), katib_experiment(plan, **kwargs)]


def write_katib_experiment(plan: SearchPlan, out: str | Path, *, parallelism: int = 2, max_trials: int = 12,
                           algorithm: str = "tpe", seed: int | None = None, data: str | None = None,
                           registry: str | None = None, tag: str | None = None,
                           prune_after: int = PRUNE_AFTER_PERCENT) -> Path:
    """Write katib_documents(plan, ...) to `out` as one YAML file (atomically); returns the path."""
    docs = katib_documents(plan, parallelism=parallelism, max_trials=max_trials, algorithm=algorithm, seed=seed,
                           data=data, registry=registry, tag=tag, prune_after=prune_after)
    header = (f"# The search {plan.path.name} as a Katib Experiment, with the ConfigMap holding its trials' base\n"
              f"# config: `kubectl apply -f {Path(out).name}`, after ingesting the splits it names (README \"Search on the cluster\").\n")
    return write_text(out, header + katib_yaml(docs), what="Katib Experiment")


def katib_yaml(docs: list[dict[str, Any]]) -> str:
    """`docs` as one YAML stream for `kubectl apply -f`, every feasible-space value quoted (see Quoted)."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=10_000)


def experiment_name(name: str) -> str:
    """`name` as Katib takes an Experiment's name: lower case, letters, digits and '-', a letter first."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not text[:1].isalpha():
        text = f"search-{text}".rstrip("-")
    text = text[:MAX_NAME].rstrip("-")
    assert _NAME.fullmatch(text), text
    return text


def config_map_name(name: str) -> str:
    return f"{experiment_name(name)}-trial-config"


def choice_texts(dim: Dimension) -> list[str]:
    """A choice dimension's values as the texts Katib hands the trial, which `--set KEY=TEXT` reads back.

    Raises:
        ConfigError: a text holds a quote, backslash, '$' or control character (see _UNSAFE).
    """
    texts = [Quoted(label if isinstance(label, str) else yaml_flow(label)) for label in dim.labels()]
    for text in texts:
        _check_safe(text, f"search {dim.key}: the choice {text!r}")
    return texts


def katib_parameter(dim: Dimension) -> dict[str, Any]:
    """One search entry as a Katib parameter, named by its config key."""
    if dim.kind == "choice":
        return {"name": dim.key, "parameterType": "categorical",
                "feasibleSpace": {"list": choice_texts(dim)}}
    return {"name": dim.key, "parameterType": "int" if dim.kind == "int" else "double",
            "feasibleSpace": {"min": _number(dim.low), "max": _number(dim.high),
                              "distribution": "logUniform" if dim.log else "uniform"}}


def trial_command(dims: tuple[Dimension, ...], data: str) -> str:
    """The trial's shell command: `longtail trial` on the mounted config, one `--set` per searched field.

    One simple command, every substituted value single-quoted: Katib's webhook appends its redirect to
    the metrics file and its completion marker to this text (`sh -c "<this> 1>... && echo completed ..."`,
    kubeflow/katib pkg/webhook/v1beta1/pod/utils.go, wrapWorkerContainer), and its early stopping
    stops the one child process of that shell.
    """
    splits = [f"{data.rstrip('/')}/{split_file(s)}" for s in ("train", "val")]
    for path in splits:
        _check_safe(path, f"data {path!r}")
    parts = ["longtail", "trial", f"{CONFIG_MOUNT}/{CONFIG_FILE}", "--train", _quoted(splits[0]),
             "--val", _quoted(splits[1]), "--out", TRIAL_OUT, "--name", _quoted(_placeholder(TRIAL_NAME_PARAMETER))]
    for d in dims:
        parts += ["--set", _quoted(f"{d.key}={_placeholder(d.key)}")]
    return " ".join(parts)


def _trial_template(plan: SearchPlan, name: str, dims: tuple[Dimension, ...], data: str | None,
                    gpus: int | None, registry: str | None, tag: str | None) -> dict[str, Any]:
    from longtail.pipelines.training import (  # the pipeline's wiring; it imports kfp, so only when an Experiment is built
        CONFIG_MAP,
        CONFIG_MAP_ENV,
        MLFLOW_SECRET,
        MLFLOW_SECRET_ENV,
        S3_SECRET,
        S3_SECRET_ENV,
    )

    config = config_from_dict(plan.base)
    gpus = pod_gpus(config.train.gpus) if gpus is None else gpus
    _check_count("gpus", gpus, low=0)
    # The pipeline's step environment: tracking URI and S3 endpoint, the MLflow user, and the S3 keys
    # (a trial reads its splits from object storage, as ingest reads raw data).
    env = [{"name": var, "valueFrom": {"configMapKeyRef": {"name": CONFIG_MAP, "key": key}}}
           for key, var in CONFIG_MAP_ENV.items()]
    for secret, keys in ((MLFLOW_SECRET, MLFLOW_SECRET_ENV), (S3_SECRET, S3_SECRET_ENV)):
        env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for key, var in keys.items()]
    limits: dict[str, Any] = {"memory": TRIAL_MEMORY}
    if gpus:
        limits[GPU_RESOURCE] = gpus
    container = {
        "name": TRIAL_CONTAINER,
        "image": image_ref("train", registry or DEFAULT_REGISTRY, tag or DEFAULT_TAG),
        "imagePullPolicy": "IfNotPresent",
        # An explicit command: without one Katib's webhook reads the image's entrypoint from its registry.
        "command": ["sh", "-c"],
        "args": [trial_command(dims, data or f"{DATA_PREFIX}/{name}")],
        "env": env,
        "resources": {"requests": {"cpu": TRIAL_CPU, "memory": TRIAL_MEMORY}, "limits": limits},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": True},
                         {"name": "home", "mountPath": HOME}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        "metadata": {"labels": {**_labels("longtail-trial"), **NO_ISTIO}, "annotations": dict(NO_ISTIO)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": POD_SECURITY,
            "containers": [container],
            "volumes": [{"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(plan.name)}},
                        {"name": "home", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        },
    }
    parameters = [{"name": TRIAL_NAME_PARAMETER, "reference": "${trialSpec.Name}",
                   "description": "the trial's name, which names its MLflow run"}]
    parameters += [{"name": d.key, "reference": d.key, "description": d.describe()} for d in dims]
    return {
        "primaryContainerName": TRIAL_CONTAINER,
        "successCondition": JOB_SUCCEEDED,
        "failureCondition": JOB_FAILED,
        "trialParameters": parameters,
        # backoffLimit 0: a failed trial is not run again (a user's error would repeat; docs/safety.md "Fail once").
        "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"annotations": CHECKOV_SKIPS},
                      "spec": {"backoffLimit": 0, "template": pod}},
    }


def _early_stopping(plan: SearchPlan, prune_after: int) -> dict[str, Any]:
    """medianstop over the per-epoch lines (timestamped for it), from `prune_after` percent (60 by default,
    PRUNE_AFTER_PERCENT, where `longtail tune` starts too) of the shortest schedule the space allows, after
    3 finished trials.
    Katib's steps are the lines a trial printed, i.e. epochs: unlike `longtail tune`, which compares
    shares of each schedule, it compares a long schedule with a short one at the same epoch."""
    epochs = next((d for d in plan.space.dimensions if d.key == HYPERBAND_RESOURCE), None)
    shortest = (int(min(epochs.choices) if epochs.kind == "choice" else epochs.low) if epochs is not None
                else int(config_from_dict(plan.base).train.epochs))
    start = max(1, math.ceil(shortest * prune_after / 100))
    return {"algorithmName": EARLY_STOPPING,
            "algorithmSettings": [{"name": "min_trials_required", "value": str(MEDIANSTOP_MIN_TRIALS)},
                                  {"name": "start_step", "value": str(start)}]}


def _algorithm(algorithm: str, dims: tuple[Dimension, ...], parallelism: int, seed: int | None) -> dict[str, Any]:
    if algorithm == "tpe":
        settings = [] if seed is None else [{"name": "random_state", "value": Quoted(seed)}]
        return {"algorithmName": "tpe", **({"algorithmSettings": settings} if settings else {})}
    budget = next((d for d in dims if d.key == HYPERBAND_RESOURCE and d.kind == "int"), None)
    if budget is None:
        raise ConfigError(f"Katib's hyperband spends {HYPERBAND_RESOURCE} as its budget: add "
                          f"{HYPERBAND_RESOURCE}: {{int: [LOW, HIGH]}} to the search block, or use the tpe algorithm")
    # Katib's own check (pkg/suggestion/v1beta1/hyperband/service.py, ValidateAlgorithmSettings): the
    # largest bracket runs at once, so parallelTrialCount must hold eta ** s_max trials.
    s_max = int(math.log(float(budget.high)) / math.log(HYPERBAND_ETA))
    needed = int(math.ceil(HYPERBAND_ETA ** s_max))
    if parallelism < needed:
        raise ConfigError(f"Katib's hyperband runs a whole bracket at once: with {HYPERBAND_RESOURCE} up to "
                          f"{budget.high} (eta {HYPERBAND_ETA}) it needs parallelism >= {needed}, got {parallelism}; "
                          "lower the range's high end or use the tpe algorithm")
    return {"algorithmName": "hyperband",
            "algorithmSettings": [{"name": "resource_name", "value": HYPERBAND_RESOURCE},
                                  {"name": "eta", "value": Quoted(HYPERBAND_ETA)},
                                  {"name": "r_l", "value": Quoted(budget.high)}]}


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "longtail"}


def _placeholder(name: str) -> str:
    return "${trialParameters." + name + "}"


def _quoted(text: str) -> str:
    return f"'{text}'"


def _number(value: float | int | None) -> Quoted:
    return Quoted(value if isinstance(value, int) else repr(float(value)))


def _check_safe(text: str, what: str) -> None:
    bad = _UNSAFE.search(text)
    if bad:
        raise ConfigError(f"{what} holds {bad.group()!r}, which cannot pass through Katib's substitution and the "
                          "trial's shell command unchanged; write it without quotes, backslashes, '$' or control characters")


def _check_count(what: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{what} must be a whole number >= {low}, got {value!r}")
