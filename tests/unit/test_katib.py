"""The Katib Experiment (longtail.katib): golden file, Katib's v1beta1 API, the search block's space, the
trial's command and pod, and a real digits trial's output read the way Katib's StdOut collector reads it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from katib_emulation import (
    NO_TIMESTAMP,
    PLACEHOLDER,
    RFC3339,
    collect,
    substitute,
    suggestion,
    validation_errors,
    wrapped_command,
)
from static_toolchain import GOLDEN_DIR, KUBERNETES_VERSION, REPO, render, require_tool

from longtail import katib
from longtail.cli import build_parser
from longtail.config_overrides import apply_overrides
from longtail.errors import ConfigError
from longtail.search_space import SearchSpace, config_at
from longtail.sweep_plan import load_search
from longtail.trial_metrics import OBJECTIVE, OBJECTIVE_HIGH, OBJECTIVE_LOW, load_trial_result

SEARCH = REPO / "experiments" / "demo-search.yaml"
GOLDEN = GOLDEN_DIR / "katib-demo-search.yaml"
METRICS = [OBJECTIVE, OBJECTIVE_LOW, OBJECTIVE_HIGH]
# The restricted Pod Security profile's volume types (kubernetes.io/docs/concepts/security/pod-security-standards).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


@pytest.fixture(scope="module")
def plan():
    return load_search(SEARCH)


@pytest.fixture(scope="module")
def experiment(plan):
    return katib.katib_experiment(plan)


def pod_of(experiment):
    return experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]


def container_of(experiment):
    (container,) = pod_of(experiment)["spec"]["containers"]
    return container


def assignments(experiment, trial_name="demo-search-x7k2p9qz") -> dict[str, str]:
    return suggestion(experiment, trial_name, katib.TRIAL_NAME_PARAMETER)


def kind_e2e():
    """scripts/kind_katib_e2e.py, whose tiny 2-trial search the real trial below runs too."""
    spec = importlib.util.spec_from_file_location("kind_katib_e2e", REPO / "scripts" / "kind_katib_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_experiment_matches_its_golden_file(tmp_path):
    from longtail.pipelines.compile import compile_katib

    got = compile_katib(tmp_path, registry="registry.example/longtail", tag="1.2.3").read_text()
    if os.environ.get("LONGTAIL_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(got)
    assert GOLDEN.is_file(), f"no golden file {GOLDEN}; run with LONGTAIL_UPDATE_GOLDEN=1 once"
    assert got == GOLDEN.read_text(), (
        "the Katib Experiment differs from tests/golden/katib-demo-search.yaml; if the change is intended, "
        "regenerate with LONGTAIL_UPDATE_GOLDEN=1 and review the diff")
    config_map, experiment = yaml.safe_load_all(got)
    assert (config_map["kind"], experiment["kind"]) == ("ConfigMap", "Experiment")
    assert container_of(experiment)["image"] == "registry.example/longtail/train:1.2.3"


def test_katibs_validator_admits_the_experiment(experiment, plan):
    assert validation_errors(experiment) == []
    for algorithm, parallelism in (("tpe", 2), ("hyperband", 27)):
        exp = katib.katib_experiment(plan, algorithm=algorithm, parallelism=parallelism, max_trials=30, seed=7)
        assert validation_errors(exp) == [], algorithm


def test_the_validator_refuses_what_katib_refuses(experiment):
    """Each break is one Katib's admission webhook names: the checks above can fail."""
    def broken(change):
        exp = json.loads(json.dumps(experiment))
        change(exp)
        return validation_errors(exp)

    assert broken(lambda e: e["metadata"].update(name="Demo_Search"))
    assert broken(lambda e: e["spec"].update(parallelTrialCount=13))
    assert broken(lambda e: e["spec"]["parameters"][0]["feasibleSpace"].update(min=0.02))
    assert broken(lambda e: e["spec"]["parameters"][0]["feasibleSpace"].update(distribution="log"))
    assert broken(lambda e: e["spec"]["trialTemplate"]["trialParameters"].pop())
    assert broken(lambda e: e["spec"]["trialTemplate"]["trialParameters"].append(
        {"name": "unused", "reference": "train.epochs"}))
    assert broken(lambda e: e["spec"]["trialTemplate"].update(primaryContainerName="main"))
    assert broken(lambda e: e["spec"]["trialTemplate"]["trialSpec"].update(metadata={"name": "x"}))
    assert broken(lambda e: e["spec"]["objective"].update(additionalMetricNames=[OBJECTIVE]))
    assert broken(lambda e: e["spec"]["earlyStopping"]["algorithmSettings"][1].update(value="0"))
    assert broken(lambda e: e["spec"]["earlyStopping"]["algorithmSettings"].append({"name": "start", "value": "2"}))


def test_the_objective_algorithm_and_counts(plan, experiment):
    spec = experiment["spec"]
    assert (experiment["apiVersion"], experiment["kind"]) == ("kubeflow.org/v1beta1", "Experiment")
    assert experiment["metadata"] == {"name": "demo-search", "namespace": "kubeflow", "labels": {
        "app.kubernetes.io/name": "longtail-search", "app.kubernetes.io/part-of": "longtail"}}
    objective = spec["objective"]
    assert (objective["type"], objective["objectiveMetricName"]) == ("maximize", "val_macro_f1")
    # The last line a trial prints is the evaluation's figure: `latest` takes it, not the best epoch's.
    assert {s["name"]: s["value"] for s in objective["metricStrategies"]} == dict.fromkeys(METRICS, "latest")
    assert spec["algorithm"] == {"algorithmName": "tpe"}
    # medianstop from 60% of the shortest schedule the space allows (train.epochs 10-40: epoch 6), as tune starts
    assert spec["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "6"}]}
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    assert (spec["parallelTrialCount"], spec["maxTrialCount"]) == (2, 12)
    # tune --prune-after 25: epoch 3 of the shortest (10 epochs)
    assert katib.katib_experiment(plan, prune_after=25)["spec"]["earlyStopping"]["algorithmSettings"][1] == {
        "name": "start_step", "value": "3"}
    with pytest.raises(ConfigError, match="prune_after is a percent of the shortest schedule, 1 to 99"):
        katib.katib_experiment(plan, prune_after=100)
    spec = katib.katib_experiment(plan, parallelism=4, max_trials=8, seed=3)["spec"]
    assert (spec["parallelTrialCount"], spec["maxTrialCount"], spec["maxFailedTrialCount"]) == (4, 8, 3)
    assert spec["algorithm"]["algorithmSettings"] == [{"name": "random_state", "value": "3"}]


def test_hyperband_spends_the_searched_epochs_and_needs_a_whole_bracket(plan):
    spec = katib.katib_experiment(plan, algorithm="hyperband", parallelism=27, max_trials=40)["spec"]
    assert spec["algorithm"] == {"algorithmName": "hyperband", "algorithmSettings": [
        {"name": "resource_name", "value": "train.epochs"}, {"name": "eta", "value": "3"}, {"name": "r_l", "value": "40"}]}
    # Katib's hyperband service: s_max = int(log(40)/log(3)) = 3, so 3**3 trials run at once.
    with pytest.raises(ConfigError, match="parallelism >= 27, got 26"):
        katib.katib_experiment(plan, algorithm="hyperband", parallelism=26, max_trials=40)
    no_epochs = replace(plan, space=SearchSpace(tuple(d for d in plan.space.dimensions if d.key != "train.epochs")))
    with pytest.raises(ConfigError, match=r"add train.epochs: \{int: \[LOW, HIGH\]\}"):
        katib.katib_experiment(no_epochs, algorithm="hyperband", parallelism=27, max_trials=40)


def test_every_search_entry_is_a_parameter_with_the_same_space_inside_the_configs_bounds(plan, experiment):
    parameters = experiment["spec"]["parameters"]
    assert [p["name"] for p in parameters] == plan.space.keys()
    for dim, p in zip(plan.space.dimensions, parameters, strict=True):
        space = p["feasibleSpace"]
        if dim.kind == "choice":
            assert p["parameterType"] == "categorical" and set(space) == {"list"}
            assert len(space["list"]) == len(dim.choices)
            for text, choice in zip(space["list"], dim.choices, strict=True):
                # What `--set KEY=TEXT` makes of the text is the choice itself, and the config takes it.
                value = apply_overrides({}, [f"{dim.key}={text}"])
                for part in dim.key.split("."):
                    value = value[part]
                assert value == choice, (dim.key, text)
                config_at(plan.base, {dim.key: value}, "check")
            continue
        assert p["parameterType"] == {"loguniform": "double", "uniform": "double", "int": "int"}[dim.kind]
        assert space["distribution"] == ("logUniform" if dim.kind == "loguniform" else "uniform")
        read = int if dim.kind == "int" else float
        assert (read(space["min"]), read(space["max"])) == (dim.low, dim.high)
        for end in (space["min"], space["max"]):
            config_at(plan.base, {dim.key: read(end)}, "check")  # raises ConfigError when out of bounds


def test_the_trial_command_runs_the_trial_entry_point_with_one_set_per_parameter(plan, experiment):
    container, pod = container_of(experiment), pod_of(experiment)
    assert experiment["spec"]["trialTemplate"]["primaryContainerName"] == container["name"]
    # An explicit `sh -c` and one argument: the webhook keeps the shell and appends to the command.
    assert container["command"] == ["sh", "-c"] and len(container["args"]) == 1
    script = container["args"][0]
    # No $ but the placeholders (Kubernetes expands $(VAR) in args), one simple command (no ; && | >).
    assert "$" not in PLACEHOLDER.sub("", script)
    lexer = shlex.shlex(PLACEHOLDER.sub("x", script), posix=True, punctuation_chars=True)
    assert not [t for t in lexer if set(t) <= set("();<>|&")], script
    argv = shlex.split(substitute(script, assignments(experiment)))
    assert argv[:2] == ["longtail", "trial"]
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert args.command == "trial" and args.name == "demo-search-x7k2p9qz"
    assert args.overrides == [f"{k}={v}" for k, v in assignments(experiment).items() if k != katib.TRIAL_NAME_PARAMETER]
    assert (args.train_h5, args.val_h5) == ("s3://longtail-data/splits/demo-search/train.h5",
                                            "s3://longtail-data/splits/demo-search/val.h5")
    # The config is the ConfigMap beside the Experiment, mounted where the command reads it.
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(Path(args.config).parent))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = katib.trial_config_map(plan)
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["namespace"] == experiment["metadata"]["namespace"]
    assert yaml.safe_load(config_map["data"][Path(args.config).name]) == plan.base
    # Each --set names its trial parameter, which references the Katib parameter of that key.
    references = {t["name"]: t["reference"] for t in experiment["spec"]["trialTemplate"]["trialParameters"]}
    assert references.pop(katib.TRIAL_NAME_PARAMETER) == "${trialSpec.Name}"
    assert references == {k: k for k in plan.space.keys()}


def test_a_value_that_cannot_pass_through_katib_unchanged_is_refused(plan, tmp_path):
    search = tmp_path / "s.yaml"
    search.write_text(f"base: {REPO / 'experiments' / 'demo.yaml'}\n"
                      "search:\n  experiment: {choice: [plain, \"it's\"]}\n")
    with pytest.raises(ConfigError, match="search experiment: the choice \"it's\" holds \"'\""):
        katib.katib_experiment(load_search(search))
    search.write_text(f"base: {REPO / 'experiments' / 'demo.yaml'}\nsearch:\n  train.lr.initial: {{uniform: [0.01, 0.1]}}\n")
    with pytest.raises(ConfigError, match="holds '\\$'"):
        katib.katib_experiment(load_search(search), data="s3://bucket/$(HOME)")
    with pytest.raises(ConfigError, match="must not exceed max_trials"):
        katib.katib_experiment(plan, parallelism=3, max_trials=2)
    with pytest.raises(ConfigError, match="one of tpe, hyperband"):
        katib.katib_experiment(plan, algorithm="random")
    with pytest.raises(ConfigError, match="parallelism must be a whole number"):
        katib.katib_experiment(plan, parallelism=True)
    with pytest.raises(ConfigError, match="seed must be"):
        katib.katib_experiment(plan, seed=-1)


def test_the_experiments_name_is_one_katib_takes():
    assert katib.experiment_name("demo-search") == "demo-search"
    assert katib.experiment_name("Exp_07 LT") == "exp-07-lt"
    assert katib.experiment_name("7up") == "search-7up"
    assert len(katib.experiment_name("x" * 100)) == katib.MAX_NAME


def test_the_trial_pod_meets_restricted_pod_security(experiment):
    pod = pod_of(experiment)
    spec = pod["spec"]
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert not {"hostNetwork", "hostPID", "hostIPC", "hostUsers"} & {k for k, v in spec.items() if v}
    assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]} and not sc.get("privileged")
        assert sc["seccompProfile"]["type"] == "RuntimeDefault" and sc["readOnlyRootFilesystem"] is True
        assert not any(port.get("hostPort") for port in c.get("ports", []))
    # Istio's proxy would never exit, so the Job would never complete: off for the trial's pod.
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"


def test_the_trial_job_is_a_valid_batch_job(experiment):
    job = substitute(experiment["spec"]["trialTemplate"]["trialSpec"], assignments(experiment))
    job["metadata"] = {**job.get("metadata", {}), "name": "demo-search-x7k2p9qz", "namespace": "kubeflow"}
    try:
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"the trial Job: {err.message} at {err.path}")
    assert job["spec"]["backoffLimit"] == 0  # a failed trial is not run again


def test_the_trial_is_wired_like_the_pipelines_train_step(experiment, plan):
    """Image, requests and GPUs of the compiled pipeline's train step; its ConfigMap and MLflow Secret;
    the S3 Secret ingest gets, since a trial reads its splits from object storage."""
    spec, platform = yaml.safe_load_all((GOLDEN_DIR / "pipeline-training.yaml").read_text())
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    container = container_of(experiment)
    requests = container["resources"]["requests"]
    assert (requests["cpu"], requests["memory"]) == (train["resources"]["resourceCpuRequest"],
                                                     train["resources"]["resourceMemoryRequest"])
    assert container["resources"]["limits"] == {"memory": requests["memory"], train["resources"]["accelerator"]["resourceType"]: 1}
    assert container["image"].rpartition("/")[2].partition(":")[0] == train["image"].rpartition("/")[2].partition(":")[0]
    env = {e["name"]: e["valueFrom"] for e in container["env"]}
    wanted = {}
    for executor in ("exec-train", "exec-ingest"):
        for cm in kubernetes[executor]["configMapAsEnv"]:
            wanted |= {k["envVar"]: {"configMapKeyRef": {"name": cm["configMapName"], "key": k["configMapKey"]}}
                       for k in cm["keyToEnv"]}
        for secret in kubernetes[executor]["secretAsEnv"]:
            wanted |= {k["envVar"]: {"secretKeyRef": {"name": secret["secretName"], "key": k["secretKey"]}}
                       for k in secret["keyToEnv"]}
    assert env == wanted
    # gpus=0 (kind) asks for none; the config's train.gpus 0 asks for one, as the pipeline's pod does.
    assert katib.GPU_RESOURCE not in container_of(katib.katib_experiment(plan, gpus=0))["resources"]["limits"]


def test_the_step_namespace_lets_katib_collect_metrics(tmp_path, experiment):
    """The rendered kind manifests hold what the trial reads, in the Experiment's namespace; that namespace
    carries the label Katib's webhook injects the collector by, and no NetworkPolicy stands between the
    collector and katib-db-manager there."""
    objects = render("overlays/kind", tmp_path)
    namespace = experiment["metadata"]["namespace"]
    (ns,) = [o for o in objects if o["kind"] == "Namespace" and o["metadata"]["name"] == namespace]
    assert ns["metadata"]["labels"]["katib.kubeflow.org/metrics-collector-injection"] == "enabled"
    assert not [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["namespace"] == namespace]
    held = {(o["kind"], o["metadata"]["name"]): o.get("data", {}) for o in objects
            if o["metadata"].get("namespace") == namespace}
    for e in container_of(experiment)["env"]:
        kind, ref = ("ConfigMap", e["valueFrom"]["configMapKeyRef"]) if "configMapKeyRef" in e["valueFrom"] else (
            "Secret", e["valueFrom"]["secretKeyRef"])
        assert ref["key"] in held[(kind, ref["name"])], (kind, ref)


def test_the_trial_job_passes_checkov(experiment, tmp_path):
    checkov = require_tool("checkov", REPO / ".venv-checkov" / "bin" / "checkov",
                           how="run `make checkov-venv` (checkov in its own venv, .venv-checkov)")
    job = substitute(experiment["spec"]["trialTemplate"]["trialSpec"], assignments(experiment))
    job["metadata"] = {**job.get("metadata", {}), "name": "trial", "namespace": experiment["metadata"]["namespace"]}
    path = tmp_path / "trial-job.yaml"
    path.write_text(yaml.safe_dump(job))
    done = subprocess.run([checkov, "--framework", "kubernetes", "--file", str(path), "--output", "json",
                           "--compact", "--skip-download"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    failed = [f"{c['check_id']} {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert report["summary"]["passed"] > 0
    for c in report["results"]["skipped_checks"]:
        assert len((c["check_result"].get("suppress_comment") or "").strip()) >= 20, c["check_id"]


def test_the_kind_e2e_runs_a_two_trial_experiment_katib_admits(tmp_path):
    plan, docs = kind_e2e().e2e_documents(tmp_path, "katib-e2e-20260101-000000", "s3://longtail-data/e2e/x")
    config_map, experiment = yaml.safe_load_all(katib.katib_yaml(docs))  # the file it applies, read back
    assert validation_errors(experiment) == []
    assert (experiment["spec"]["maxTrialCount"], experiment["spec"]["parallelTrialCount"]) == (2, 2)
    assert katib.GPU_RESOURCE not in container_of(experiment)["resources"]["limits"]
    assert yaml.safe_load(config_map["data"][katib.CONFIG_FILE])["experiment"] == "katib-e2e-20260101-000000"
    assert {d.kind for d in plan.space.dimensions} == {"loguniform", "uniform", "int", "choice"}
    # kind-e2e.sh runs it; kind-up.sh installs the pinned Katib before longtail's manifests, whose
    # namespace labels (the collector's among them) must be applied last.
    assert "scripts/kind_katib_e2e.py" in (REPO / "scripts" / "kind-e2e.sh").read_text()
    up = (REPO / "scripts" / "kind-up.sh").read_text()
    katib_install = up.index("katib-standalone?ref=${KATIB_VERSION}")
    assert up.index("env/platform-agnostic?ref=${KFP_VERSION}") < katib_install < up.index("apply -k manifests/overlays/kind")
    assert re.search(r'^KATIB_VERSION="\$\{KATIB_VERSION:-v0\.(1[89]|[2-9]\d)\.\d+\}"$',
                     (REPO / "scripts" / "kind-lib.sh").read_text(), re.MULTILINE), "logUniform needs Katib v0.18+"


def configmap_folder(folder: Path, config_text: str) -> Path:
    """`folder` laid out as the kubelet mounts a ConfigMap: the file a link into a timestamped folder."""
    data = folder / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    (data / katib.CONFIG_FILE).write_text(config_text)
    (folder / "..data").symlink_to(data.name)
    (folder / katib.CONFIG_FILE).symlink_to(f"..data/{katib.CONFIG_FILE}")
    return folder


@pytest.mark.slow
def test_a_real_digits_trial_prints_what_katibs_stdout_collector_reads(tmp_path):
    """The kind e2e's Experiment's own command, rewritten as Katib's webhook rewrites it, on digits ingested at 16 px:
    every epoch's line and the evaluation's reach the collector with their timestamps, the evaluation's
    last, and the completion marker is written."""
    from longtail.datasets import make_digits_lt

    make_digits_lt(tmp_path / "digits", imbalance=10)
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "longtail"), "ingest", str(tmp_path / "digits" / "train"), str(tmp_path / "splits"),
                    "--image-size", "16"], check=True, capture_output=True, timeout=300)
    _, (config_map, experiment) = kind_e2e().e2e_documents(tmp_path, "tiny-search", str(tmp_path / "splits"))
    container = container_of(experiment)
    values = assignments(experiment, "tiny-search-4fj9w2lc")
    assert values["train.epochs"] == "2"
    command = substitute(wrapped_command(container["command"], container["args"], str(tmp_path / "katib")),
                         values)
    # The pod's mounts, here: the ConfigMap's folder, home and the metrics folder (an emptyDir the webhook adds).
    configmap_folder(tmp_path / "config", config_map["data"][katib.CONFIG_FILE])
    command[-1] = command[-1].replace(katib.CONFIG_MOUNT, str(tmp_path / "config")).replace(
        katib.TRIAL_OUT, str(tmp_path / "home" / "trial"))
    (tmp_path / "katib").mkdir()
    (tmp_path / "home").mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"}
    done = subprocess.run(command, env=env, cwd=tmp_path / "home", capture_output=True, text=True, timeout=600)
    log = (tmp_path / "katib" / "metrics.log").read_text()
    assert done.returncode == 0, log[-3000:] + done.stderr[-2000:]
    markers = list((tmp_path / "katib").glob("*.pid"))
    assert [m.read_text().strip() for m in markers] == ["completed"]

    observations = collect(log, METRICS)
    objective = [o for o in observations if o.name == OBJECTIVE]
    assert len(objective) == 2 + 1, observations  # one per epoch, then the evaluation's
    assert all(o.timestamp != NO_TIMESTAMP for o in observations), observations
    times = [o.timestamp for o in observations]
    assert times == sorted(times), "medianstop reads the values in their timestamps' order"
    result = load_trial_result(tmp_path / "home" / "trial")
    assert float(objective[-1].value) == pytest.approx(result.value, abs=1e-6)
    assert [float(o.value) for o in observations if o.name != OBJECTIVE] == pytest.approx([result.low, result.high], abs=1e-6)
    assert [o.timestamp for o in observations if o.name != OBJECTIVE] == [objective[-1].timestamp] * 2
    # Every line the collector takes a value from starts with an RFC 3339 time, then a space.
    for line in log.splitlines():
        if f"{OBJECTIVE}=" in line:
            head, _, rest = line.partition(" ")
            assert RFC3339.fullmatch(head) and rest.startswith("epoch="), line
    # The run in MLflow is named after the trial.
    assert "tiny-search-4fj9w2lc" in log
