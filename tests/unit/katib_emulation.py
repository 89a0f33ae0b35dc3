"""What Katib does with an Experiment and its trials, re-done in Python from Katib's source, so tests can
hold longtail's Experiment and a real trial against it without a cluster.

Each piece names the Go (or Python) code it follows, in kubeflow/katib as of v0.19.0 (the release
scripts/kind-lib.sh pins):
- validation_errors: pkg/webhook/v1beta1/experiment/validator/validator.go (ValidateExperiment and the
  checks it calls), over the types of pkg/apis/controller/experiments/v1beta1/experiment_types.go;
- substitute: pkg/controller.v1beta1/consts/const.go, TrialTemplateParamReplaceFormat;
- wrapped_command: pkg/webhook/v1beta1/pod/utils.go, wrapWorkerContainer and getMarkCompletedCommand
  (StdOut collector, no early-stopping rules yet), then Kubernetes' own `$$` -> `$` in container args;
- medianstop_errors: pkg/earlystopping/v1beta1/medianstop/service.py, validate_medianstop_setting
  (the early-stopping service's own check of its settings);
- collect: pkg/metricscollector/v1beta1/file-metricscollector/file-metricscollector.go,
  parseLogsInTextFormat and newObservationLog, with common/const.go's DefaultFilter.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# common.DefaultFilePath's folder: the metrics file and the completion marker the webhook writes there.
METRICS_DIR = "/var/log/katib"
# common.DefaultFilter: `loss=0.3`, `accuracy=.98`, `Score=-7.53e-05`. Go's \w is ASCII.
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
# time.Time{}.UTC().Format(time.RFC3339): the timestamp of a value whose line began with none.
NO_TIMESTAMP = "0001-01-01T00:00:00Z"
UNAVAILABLE = "unavailable"  # consts.UnavailableMetricValue: the objective never reported
# What time.Parse(time.RFC3339Nano, s) accepts, as a pattern.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
PLACEHOLDER = re.compile(r"\$\{trialParameters\..+?\}")  # consts.TrialTemplateParamReplaceFormatRegex
META_REFERENCE = re.compile(r"\$\{trialSpec\.(.+?)\}")  # consts.TrialTemplateMetaReplaceFormatRegex
META_KEYS = ("Name", "Namespace", "Kind", "APIVersion", "Annotations", "Labels")
NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The algorithms of Katib's default KatibConfig (manifests/v1beta1/installs/katib-standalone/katib-config.yaml):
# the validator asks the config for the named algorithm's suggestion image.
SUGGESTIONS = {"random", "tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "sobol", "multivariate-tpe",
               "enas", "darts", "pbt"}
EARLY_STOPPINGS = {"medianstop"}
COLLECTORS = {"StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None", "Push"}
PARAMETER_TYPES = {"int", "double", "categorical", "discrete"}
DISTRIBUTIONS = {"uniform", "logUniform", "normal", "logNormal"}
METRIC_STRATEGIES = {"min", "max", "latest"}


def medianstop_errors(settings: list[dict[str, str]]) -> list[str]:
    """medianstop's settings as its service checks them: min_trials_required > 0, start_step >= 1, no other name."""
    errors = []
    for setting in settings:
        name, value = setting.get("name"), setting.get("value")
        try:
            number = int(value)
        except (TypeError, ValueError):
            errors.append(f"medianstop {name}: {value!r} is not an integer")
            continue
        if name == "min_trials_required" and not number > 0:
            errors.append("medianstop min_trials_required must be greater than zero (>0)")
        elif name == "start_step" and not number >= 1:
            errors.append("medianstop start_step must be greater or equal than one (>=1)")
        elif name not in ("min_trials_required", "start_step"):
            errors.append(f"medianstop: unknown setting {name}")
    return errors


def validation_errors(experiment: dict[str, Any]) -> list[str]:
    """Why Katib's admission webhook would refuse `experiment`, one line per reason; [] if it would admit it."""
    errors: list[str] = []
    if experiment.get("apiVersion") != "kubeflow.org/v1beta1" or experiment.get("kind") != "Experiment":
        errors.append("apiVersion/kind: not a kubeflow.org/v1beta1 Experiment")
    meta, spec = experiment.get("metadata", {}), experiment.get("spec", {})
    if not NAME.fullmatch(meta.get("name", "")):
        errors.append(f"metadata.name {meta.get('name')!r}: lower case alphanumerics and '-', a letter first")
    errors += _count_errors(spec)
    errors += _objective_errors(spec.get("objective"))
    if (spec.get("algorithm") or {}).get("algorithmName") not in SUGGESTIONS:
        errors.append(f"spec.algorithm.algorithmName {spec.get('algorithm')}: no such suggestion")
    stopping = spec.get("earlyStopping")
    if stopping is not None and stopping.get("algorithmName") not in EARLY_STOPPINGS:
        errors.append(f"spec.earlyStopping.algorithmName {stopping}: no such early stopping")
    elif stopping is not None:
        errors += medianstop_errors(stopping.get("algorithmSettings") or [])
    if spec.get("resumePolicy", "") not in ("", "Never", "LongRunning", "FromVolume"):
        errors.append(f"spec.resumePolicy {spec['resumePolicy']!r}")
    errors += _parameter_errors(spec.get("parameters") or [])
    errors += _template_errors(spec)
    kind = ((spec.get("metricsCollectorSpec") or {}).get("collector") or {}).get("kind", "StdOut")
    if kind not in COLLECTORS:
        errors.append(f"spec.metricsCollectorSpec.collector.kind {kind!r}")
    return errors


def _count_errors(spec: dict[str, Any]) -> list[str]:
    errors = []
    most, failed, parallel = spec.get("maxTrialCount"), spec.get("maxFailedTrialCount"), spec.get("parallelTrialCount")
    for name, value, low in (("maxTrialCount", most, 1), ("maxFailedTrialCount", failed, 0),
                             ("parallelTrialCount", parallel, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            errors.append(f"spec.{name} {value!r} must be an int >= {low}")
    if isinstance(most, int) and isinstance(failed, int) and failed > most:
        errors.append("spec.maxFailedTrialCount must be <= spec.maxTrialCount")
    if isinstance(most, int) and isinstance(parallel, int) and parallel > most:
        errors.append("spec.parallelTrialCount must be <= spec.maxTrialCount")
    return errors


def _objective_errors(objective: dict[str, Any] | None) -> list[str]:
    if not objective:
        return ["spec.objective must be specified"]
    errors = []
    if objective.get("type") not in ("minimize", "maximize"):
        errors.append(f"spec.objective.type {objective.get('type')!r}")
    name = objective.get("objectiveMetricName")
    if not name:
        errors.append("spec.objective.objectiveMetricName must be specified")
    additional = objective.get("additionalMetricNames") or []
    if name in additional:
        errors.append("spec.objective.additionalMetricNames must not hold the objective")
    for strategy in objective.get("metricStrategies") or []:
        if strategy.get("name") not in [name, *additional] or strategy.get("value") not in METRIC_STRATEGIES:
            errors.append(f"spec.objective.metricStrategies {strategy}")
    return errors


def _parameter_errors(parameters: list[dict[str, Any]]) -> list[str]:
    if not parameters:
        return ["spec.parameters must be specified"]
    errors = []
    for i, p in enumerate(parameters):
        where, kind, space = f"spec.parameters[{i}]", p.get("parameterType"), p.get("feasibleSpace") or {}
        if kind not in PARAMETER_TYPES:
            errors.append(f"{where}.parameterType {kind!r}")
        if space.get("distribution", "") not in ("", *DISTRIBUTIONS):
            errors.append(f"{where}.feasibleSpace.distribution {space['distribution']!r}")
        if not space:
            errors.append(f"{where}.feasibleSpace must be specified")
        # FeasibleSpace's fields are strings (and a list of strings) in the API.
        for field in ("min", "max", "step", "distribution"):
            if field in space and not isinstance(space[field], str):
                errors.append(f"{where}.feasibleSpace.{field} {space[field]!r} is not a string")
        if not all(isinstance(v, str) for v in space.get("list", [])):
            errors.append(f"{where}.feasibleSpace.list holds a non-string")
        if kind in ("int", "double"):
            if space.get("list"):
                errors.append(f"{where}.feasibleSpace.list is not supported for {kind}")
            if not space.get("min") and not space.get("max"):
                errors.append(f"{where}.feasibleSpace.min or max must be specified for {kind}")
        elif kind in ("categorical", "discrete") and ({"min", "max", "step"} & set(space)):
            errors.append(f"{where}.feasibleSpace min, max and step are not supported for {kind}")
    return errors


def _template_errors(spec: dict[str, Any]) -> list[str]:
    template = spec.get("trialTemplate")
    if not template:
        return ["spec.trialTemplate must be specified"]
    errors = []
    if not template.get("primaryContainerName"):
        errors.append("spec.trialTemplate.primaryContainerName must be specified")
    if not template.get("successCondition") or not template.get("failureCondition"):
        errors.append("spec.trialTemplate: successCondition and failureCondition must be specified")
    if template.get("trialParameters") is None:
        return [*errors, "spec.trialTemplate.trialParameters must be specified"]
    if "trialSpec" not in template:
        return [*errors, "spec.trialTemplate.trialSpec must be specified"]
    text = json.dumps(template["trialSpec"])
    parameter_names = {p.get("name") for p in spec.get("parameters") or []}
    names: set[str] = set()
    references: set[str] = set()
    for i, p in enumerate(template["trialParameters"]):
        name, reference = p.get("name", ""), p.get("reference", "")
        where = f"spec.trialTemplate.trialParameters[{i}]"
        if not name or not reference or "{" in name or "}" in name:
            errors.append(f"{where}: name and reference must be specified and name must not hold braces")
            continue
        if name in names or reference in references:
            errors.append(f"{where}: {name!r} or {reference!r} appears twice")
            continue
        names.add(name)
        references.add(reference)
        if parameter_names and reference not in parameter_names and not _is_meta(reference):
            errors.append(f"{where}.reference {reference!r} is in neither spec.parameters nor the trial's metadata")
        placeholder = "${trialParameters." + name + "}"
        if placeholder not in text:
            return [*errors, f"{where}.name {name!r} is not used in the trial template"]
        text = text.replace(placeholder, "test-value")
    left = PLACEHOLDER.findall(text)
    if left:
        errors.append(f"spec.trialTemplate uses {left}, which trialParameters do not name")
    job = json.loads(text)
    if job.get("metadata", {}).get("name") or job.get("metadata", {}).get("namespace"):
        errors.append("spec.trialTemplate: metadata.name and metadata.namespace must be omitted")
    if not job.get("apiVersion") or not job.get("kind"):
        errors.append("spec.trialTemplate: apiVersion and kind must be specified")
    # The pod webhook fails a trial whose pod has no container of the primary name (ErrPrimaryContainerNotFound).
    if job.get("kind") == "Job":
        containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        if template.get("primaryContainerName") not in [c.get("name") for c in containers]:
            errors.append("spec.trialTemplate: no container is named primaryContainerName")
    return errors


def _is_meta(reference: str) -> bool:
    match = META_REFERENCE.fullmatch(reference)
    if not match:
        return False
    key = match.group(1)
    indexed = re.fullmatch(r"(.+)\[(.+)]", key)
    return key in META_KEYS or bool(indexed and indexed.group(1) in META_KEYS)


def suggestion(experiment: dict[str, Any], trial_name: str, name_parameter: str = "trialName") -> dict[str, str]:
    """The trial parameters of one trial, as texts a suggestion service hands Katib: the trial's name for
    `name_parameter` (a `${trialSpec.Name}` reference), the middle of each range, each list's last entry."""
    out = {name_parameter: trial_name}
    for p in experiment["spec"]["parameters"]:
        space = p["feasibleSpace"]
        if p["parameterType"] == "categorical":
            out[p["name"]] = space["list"][-1]
        elif p["parameterType"] == "int":
            out[p["name"]] = str(int(space["max"]))
        else:
            low, high = float(space["min"]), float(space["max"])
            out[p["name"]] = repr(math.sqrt(low * high) if space["distribution"] == "logUniform" else (low + high) / 2)
    return out


def substitute(value: Any, assignments: dict[str, str]) -> Any:
    """`value` (a template, or any part of it) with each `${trialParameters.NAME}` replaced by its assignment."""
    text = json.dumps(value)
    for name, assigned in assignments.items():
        text = text.replace("${trialParameters." + name + "}", assigned)
    return json.loads(text)


def wrapped_command(command: list[str], args: list[str], metrics_dir: str = METRICS_DIR) -> list[str]:
    """The primary container's command line once Katib's webhook has rewritten it for the StdOut collector:
    its output to the metrics file, then the completion marker, under `sh -c` (kept when already there)."""
    argv = [*command, *args]
    shell, rest = (argv[:2], argv[2:]) if argv[0] in ("sh", "bash") and argv[1:2] == ["-c"] else (["sh", "-c"], argv)
    rest = [*rest, f"1>{metrics_dir}/metrics.log 2>&1", "&&", f"echo completed > {metrics_dir}/$$$$.pid"]
    return [*shell, " ".join(rest).replace("$$", "$")]  # Kubernetes reads `$$` in args as a literal `$`


@dataclass(frozen=True)
class MetricLog:
    """One observation the collector reports: the line's timestamp, the metric's name and its value's text."""

    timestamp: str
    name: str
    value: str


def collect(text: str, metrics: list[str], filters: tuple[str, ...] = (DEFAULT_FILTER,)) -> list[MetricLog]:
    """The observation log the StdOut collector reports for the metrics file `text`; `metrics[0]` is the objective."""
    patterns = [re.compile(f, re.ASCII) for f in filters]
    logs: list[MetricLog] = []
    for line in text.split("\n"):
        if not any(m in line for m in metrics):
            continue
        timestamp = NO_TIMESTAMP
        head, sep, _ = line.partition(" ")
        if sep and RFC3339.fullmatch(head):
            datetime.fromisoformat(head)  # a real date and time, as time.Parse also checks
            timestamp = head
        for pattern in patterns:
            for match in pattern.finditer(line):
                name, value = match.group(1).strip(), match.group(2).strip()
                if name in metrics:
                    logs.append(MetricLog(timestamp, name, value))
    if not any(log.name == metrics[0] for log in logs):
        return [MetricLog(NO_TIMESTAMP, metrics[0], UNAVAILABLE)]
    return logs
