"""The compiled pipeline YAML: golden file, strict PipelineSpec parse, and the cluster wiring."""

import os
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from longtail.pipelines.compile import compile_all

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
VOLATILE = re.compile(r"^(\s*sdkVersion:).*$", re.MULTILINE)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    return {p.stem: p for p in compile_all(out, registry="registry.example/longtail", tag="1.2.3")}


def documents(path):
    """(pipeline_spec, platform_spec) of a compiled file; platform spec is the 2nd YAML document."""
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def strip_volatile(text: str) -> str:
    """Drop the SDK version and KFP's leading comment block (it prints dict defaults in no fixed order)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return VOLATILE.sub(r"\1 <stripped>", body) + "\n"


def test_every_pipeline_matches_its_golden_file(compiled):
    for name, path in compiled.items():
        golden = GOLDEN / f"pipeline-{name}.yaml"
        got = strip_volatile(path.read_text())
        if os.environ.get("LONGTAIL_UPDATE_GOLDEN") == "1":
            golden.write_text(got)
        assert golden.is_file(), f"no golden file {golden}; run with LONGTAIL_UPDATE_GOLDEN=1 once"
        assert got == golden.read_text(), (
            f"{name}.yaml differs from {golden.name}; if the change is intended, "
            "regenerate with LONGTAIL_UPDATE_GOLDEN=1 and review the diff")


def test_every_pipeline_parses_strictly_as_pipeline_spec(compiled):
    for path in compiled.values():
        spec, _ = documents(path)
        msg = pipeline_spec_pb2.PipelineSpec()
        json_format.ParseDict(spec, msg, ignore_unknown_fields=False)
        assert msg.pipeline_info.name.startswith("longtail-")
        assert msg.deployment_spec, "no executors"


def executors(spec):
    return spec["deploymentSpec"]["executors"]


def test_train_requests_gpus_from_the_gpus_parameter(compiled):
    spec, _ = documents(compiled["training"])
    train = next(e for name, e in executors(spec).items() if name == "exec-train")
    accel = train["container"]["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu"
    assert "gpus" in str(accel.get("resourceCount", "")), accel
    assert spec["root"]["inputDefinitions"]["parameters"]["gpus"]["defaultValue"] >= 1


def test_every_task_requests_cpu_and_memory(compiled):
    spec, _ = documents(compiled["training"])
    for name, e in executors(spec).items():
        res = e["container"].get("resources", {})
        assert "resourceCpuRequest" in res and "resourceMemoryRequest" in res, name


def all_tasks(spec):
    comps = [spec["root"]] + list(spec["components"].values())
    for comp in comps:
        yield from comp.get("dag", {}).get("tasks", {}).items()


def test_only_train_is_retried_and_it_hands_a_user_error_on(compiled):
    # KFP retries every non-zero exit: a step that can fail on bad input gets no retry policy, so a
    # single class or a refused bucket fails the run once (docs/safety.md "Fail once"); S3 and
    # MLflow calls are retried inside the steps, within the storage layer's budget.
    for name in ("training", "sweep"):
        spec, _ = documents(compiled[name])
        retried = {task for task, body in all_tasks(spec) if "retryPolicy" in body}
        assert retried == {"train"}, (name, retried)
    spec, _ = documents(compiled["training"])
    tasks = dict(all_tasks(spec))
    # Training is retried because it resumes: its checkpoints live on a PVC keyed by the run id.
    policy = tasks["train"]["retryPolicy"]
    assert policy["maxRetryCount"] >= 1 and policy.get("backoffFactor", 0) >= 2
    # ...and a user's error there ends the step, handed on to evaluate, which is not retried.
    assert "with handed_on(model.path, retried=bool(checkpoint_root))" in " ".join(
        executors(spec)["exec-train"]["container"]["command"])
    assert "retryPolicy" not in tasks["evaluate"]


def test_train_checkpoints_on_a_pvc_keyed_by_the_run_id(compiled):
    spec, platform = documents(compiled["training"])
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    (mount,) = train["pvcMount"]
    assert mount["mountPath"] == "/checkpoints"
    assert "longtail-checkpoints" in str(mount)
    inputs = dict(all_tasks(spec))["train"]["inputs"]["parameters"]
    assert inputs["checkpoint_root"]["runtimeValue"]["constant"] == "/checkpoints"
    assert inputs["checkpoint_key"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def train_wiring(path):
    """(train task, train executor, its Kubernetes executor config) of a compiled pipeline."""
    spec, platform = documents(path)
    return (dict(all_tasks(spec))["train"], executors(spec)["exec-train"],
            platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"])


def test_a_sweep_child_trains_as_the_training_pipeline_does(compiled):
    single_task, single_exec, single_k8s = train_wiring(compiled["training"])
    task, exec_, k8s = train_wiring(compiled["sweep"])
    # GPUs from the child's own train.gpus (validate-config's output), not a constant.
    accel = exec_["container"]["resources"]["accelerator"]
    assert accel["resourceType"] == "nvidia.com/gpu" and "count" not in accel
    assert "validate-config-gpus" in accel["resourceCount"], accel
    gpus_from = task["inputs"]["parameters"]["pipelinechannel--validate-config-gpus"]["taskOutputParameter"]
    assert gpus_from == {"outputParameterKey": "gpus", "producerTask": "validate-config"}
    assert "pipelinechannel--gpus" in single_exec["container"]["resources"]["accelerator"]["resourceCount"]
    # Retried like a single run's train step, resuming from the same checkpoint PVC.
    assert task["retryPolicy"] == single_task["retryPolicy"] and task["retryPolicy"]["maxRetryCount"] >= 1
    assert k8s["pvcMount"] == single_k8s["pvcMount"]
    assert k8s["pvcMount"][0]["mountPath"] == "/checkpoints"
    params = task["inputs"]["parameters"]
    assert params["checkpoint_root"]["runtimeValue"]["constant"] == "/checkpoints"
    # Children share the pipeline run, so each keys its checkpoints by its own task.
    assert params["checkpoint_key"]["runtimeValue"]["constant"] == "{{$.pipeline_task_uuid}}"
    # The same ConfigMap and Secrets, and the same requests on the branch's other steps.
    assert {k: v for k, v in k8s.items() if k != "pvcMount"} == {k: v for k, v in single_k8s.items() if k != "pvcMount"}
    sweep_execs, single_execs = executors(documents(compiled["sweep"])[0]), executors(documents(compiled["training"])[0])
    for name in ("exec-weights", "exec-evaluate"):
        assert sweep_execs[name]["container"]["resources"] == single_execs[name]["container"]["resources"], name


def test_the_sweep_returns_its_submission_and_opens_its_own_parent_run(compiled):
    spec, _ = documents(compiled["sweep"])
    assert set(spec["root"]["outputDefinitions"]["artifacts"]) == {"leaderboard", "submission"}
    # kfp.local's parent-run workaround (a parent_run_id parameter reused by start_sweep) stays in
    # pipelines/local.py: the compiled sweep always opens its parent run in start_sweep.
    assert "parent_run_id" not in spec["root"]["inputDefinitions"]["parameters"]
    assert set(spec["components"]["comp-start-sweep"]["inputDefinitions"]["parameters"]) == {
        "configs", "experiment", "sweep_name"}
    compare = dict(all_tasks(spec))["compare"]["inputs"]["parameters"]["parent_run_id"]
    assert compare["taskOutputParameter"] == {"outputParameterKey": "sweep_run_id", "producerTask": "start-sweep"}


def producers(spec, component, output):
    """The leaf tasks and their output keys that feed `output` of a DAG component, through nested DAGs."""
    dag = spec["root"] if component == "root" else spec["components"][component]
    found = set()
    for selector in dag["dag"]["outputs"]["artifacts"][output]["artifactSelectors"]:
        task = selector["producerSubtask"]
        ref = dag["dag"]["tasks"][task]["componentRef"]["name"]
        if "dag" in spec["components"][ref]:
            found |= producers(spec, ref, selector["outputArtifactKey"])
        else:
            found.add((task, selector["outputArtifactKey"]))
    return found


def test_the_training_run_returns_its_submission_from_either_gate_branch(compiled):
    spec, _ = documents(compiled["training"])
    outputs = spec["root"]["outputDefinitions"]["artifacts"]
    assert outputs["submission"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert outputs["model"]["artifactType"]["schemaTitle"] == "system.Model"
    # One selector from the root: the If/Else group's OneOf, which selects between its two branches.
    (selector,) = spec["root"]["dag"]["outputs"]["artifacts"]["submission"]["artifactSelectors"]
    group = spec["components"][f"comp-{selector['producerSubtask']}"]
    assert len(group["dag"]["outputs"]["artifacts"][selector["outputArtifactKey"]]["artifactSelectors"]) == 2
    assert producers(spec, "root", "submission") == {("submit", "submission"), ("skip-submission", "submission")}
    assert producers(spec, "root", "model") == {("train", "model")}


def test_config_map_everywhere_and_s3_secret_only_on_ingest(compiled):
    _, platform = documents(compiled["training"])
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    spec, _ = documents(compiled["training"])
    for name in executors(spec):
        assert execs[name]["configMapAsEnv"][0]["configMapName"] == "longtail-config", name
    with_secret = {n for n, e in execs.items() if any(s["secretName"] == "longtail-s3" for s in e.get("secretAsEnv", []))}
    assert with_secret == {"exec-ingest", "exec-ingest-2"}
    keys = {k["envVar"] for s in execs["exec-ingest"]["secretAsEnv"] if s["secretName"] == "longtail-s3"
            for k in s["keyToEnv"]}
    assert keys == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name in executors(spec):  # MLflow's basic-auth user on every step: each one logs
        mlflow = [s for s in execs[name]["secretAsEnv"] if s["secretName"] == "longtail-mlflow"]
        assert {k["envVar"] for k in mlflow[0]["keyToEnv"]} == {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}


def test_images_come_from_the_compile_flags(compiled):
    spec, _ = documents(compiled["training"])
    images = {e["container"]["image"] for e in executors(spec).values()}
    assert images == {f"registry.example/longtail/{n}:1.2.3" for n in ("ingest", "train", "evaluate")}


def test_no_pip_install_at_pod_start(compiled):
    for path in compiled.values():
        text = path.read_text()
        assert "pip install" not in text and "PIP_DISABLE" not in text


CREDENTIAL = re.compile(r"(AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]|minioadmin|password\s*[:=]\s*\S+)", re.I)


def test_no_credential_literal_in_any_compiled_yaml(compiled):
    for path in compiled.values():
        assert not CREDENTIAL.search(path.read_text()), path


def test_the_resolve_step_takes_exactly_the_knobs():
    import inspect

    from longtail.components.config import resolve_config
    from longtail.knobs import KNOBS

    params = list(inspect.signature(resolve_config.python_func).parameters)
    assert params[0] == "base_config" and set(params[1:]) == set(KNOBS)


def test_the_local_sweep_takes_its_parent_run_as_a_parameter(tmp_path):
    """kfp.local's workaround: `longtail sweep` opens the parent run and passes it in (pipelines/local.py)."""
    from kfp import compiler

    from longtail.config import load_config
    from longtail.pipelines.local import local_sweep_pipeline

    cfg = load_config(REPO / "experiments" / "demo.yaml")
    path = tmp_path / "local-sweep.yaml"
    compiler.Compiler().compile(local_sweep_pipeline([cfg, cfg], 2), package_path=str(path))
    spec, _ = documents(path)
    assert "parent_run_id" in spec["root"]["inputDefinitions"]["parameters"]
    assert set(spec["root"]["outputDefinitions"]["artifacts"]) == {"leaderboard", "submission"}
    assert "comp-start-sweep" not in spec["components"]
    compare = dict(all_tasks(spec))["compare"]["inputs"]["parameters"]["parent_run_id"]
    assert compare == {"componentInputParameter": "parent_run_id"}
