"""Every pipeline step in its own step image, against a real S3 server and a real MLflow server; and the
Katib trial's command in the train image, as Katib's webhook rewrites it (longtail.katib).

Needs the images (`make images`) and a container engine (podman's Docker API; the fixture starts it
with scripts/podman-service.sh). Deselected from `make test`; `make test-containers` runs it.
Raw images live on SeaweedFS (credentials enforced); MLflow is a server process whose artifacts are
proxied to the same S3 server, so the step containers hold S3 keys only for reading raw data.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import mlflow
import pytest
from conftest import TINY_PIPELINE, SeaweedServer
from test_services import MlflowServer

from longtail.components.images import image_ref
from longtail.splits import read_arrays

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "demo.yaml"
TINY = TINY_PIPELINE + ["train.deterministic=true"]
BUCKET = "containers-test"
PODMAN_SOCKET = "/run/podman/podman.sock"

pytestmark = [pytest.mark.containers, pytest.mark.slow]


@pytest.fixture(scope="module")
def docker_host():
    """DOCKER_HOST for the runner: the caller's, else podman's API started by scripts/podman-service.sh,
    and stopped again when this module is done if the fixture started it (a service left running keeps
    the environment of the checkout that started it, which a later run must not inherit)."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    script = str(REPO / "scripts" / "podman-service.sh")
    up = subprocess.run([script, "up"], check=True, timeout=120, capture_output=True, text=True)
    try:
        yield f"unix://{PODMAN_SOCKET}"
    finally:
        if "podman-service: up" in up.stdout:  # not "already answers": this fixture started it
            subprocess.run([script, "down"], check=False, timeout=60)


@pytest.fixture(scope="module")
def stack(digits_lt, tmp_path_factory, docker_host):
    """A private SeaweedFS holding the raw digits-lt images, and an MLflow server proxying to it."""
    server = SeaweedServer(tmp_path_factory.mktemp("s3"))
    tracking = None
    try:
        server.start()
        keys = server.credentials
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=keys[
            "AWS_ACCESS_KEY_ID"], aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])
        s3.create_bucket(Bucket=BUCKET)
        for path in digits_lt.rglob("*.png"):
            s3.upload_file(str(path), BUCKET, f"raw/digits/{path.relative_to(digits_lt).as_posix()}")
        tracking = MlflowServer(tmp_path_factory.mktemp("mlflow"), f"s3://{BUCKET}/mlflow", server.url)
        tracking.env.update(keys)  # the server alone writes artifacts to S3
        url = tracking.start(timeout=300)  # a loaded 2-core machine takes minutes to import the server
        env = {**os.environ, **keys, "S3_ENDPOINT_URL": server.url, "MLFLOW_TRACKING_URI": url,
               "DOCKER_HOST": docker_host}
        yield {"server": server, "s3": s3, "mlflow": url, "env": env}
    finally:  # also when a server fails to start: nothing may outlive the module
        if tracking is not None:
            tracking.stop()
        server.stop()


def longtail_run(stack, home: Path, runner: str, on_line=None, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`longtail run -v experiments/demo.yaml` on the S3 copy of digits-lt (-v: kfp.local's full log, which
    names each task's container image, on stdout); on_line(line) sees stdout live."""
    cmd = [sys.executable, "-m", "longtail.cli", "run", str(CONFIG),
           "--data", f"s3://{BUCKET}/raw/digits/train", "--test", f"s3://{BUCKET}/raw/digits/test",
           "--home", str(home), "--runner", runner, "-v", *sum((["--set", s] for s in (*TINY, *sets)), [])]
    proc = subprocess.Popen(cmd, env=stack["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    out = []
    for line in proc.stdout:
        out.append(line)
        if on_line is not None:
            on_line(line)
    proc.wait(timeout=1200)
    reader.join(timeout=30)
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(out), "".join(err))


def run_id(done: subprocess.CompletedProcess) -> str:
    return re.search(r"MLflow run:\s+([0-9a-f]{32})", done.stdout).group(1)


def test_each_step_runs_in_its_image_and_matches_the_subprocess_runner(stack, tmp_path):
    done = longtail_run(stack, tmp_path / "container", "container")
    assert done.returncode == 0, done.stderr[-3000:]
    # The runner names each task's image: every step ran in a container of its own step image.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    tasks = re.findall(r"Executing task '([\w-]+)'\n(?:.*\n)*?\s+container ([0-9a-f]+): image (\S+)", plain)
    by_task = {task: image for task, _, image in tasks}
    assert by_task == {"resolve-config": image_ref("ingest"), "ingest": image_ref("ingest"),
                       "ingest-2": image_ref("ingest"), "weights": image_ref("ingest"),
                       "train": image_ref("train"), "evaluate": image_ref("evaluate"),
                       "submit": image_ref("evaluate")}, plain[-3000:]
    assert len({container for _, container, _ in tasks}) == len(tasks), "one container per step"
    # The MLflow server holds params, a metric per epoch, the model and the submission.
    client = mlflow.MlflowClient(tracking_uri=stack["mlflow"])
    container_run = client.get_run(run_id(done))
    assert container_run.data.params["model.name"] == "small_cnn"
    assert container_run.data.params["train.epochs"] == "2"
    history = client.get_metric_history(container_run.info.run_id, "val_macro_f1")
    assert [m.step for m in history] == [0, 1], history
    artifacts = {a.path for a in client.list_artifacts(container_run.info.run_id)}
    assert {"submission", "curves.png", "preprocessing.json"} <= artifacts, artifacts
    (model_output,) = container_run.outputs.model_outputs
    model_files = {a.path for a in client.list_logged_model_artifacts(model_output.model_id)}
    assert {"MLmodel", "data", "preprocessing.json"} <= model_files, model_files
    # Raw images came from s3:// and the artifacts went through the server into the same bucket.
    keys = [o["Key"] for page in stack["s3"].get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="mlflow/") for o in page.get("Contents", [])]
    assert any(container_run.info.run_id in k for k in keys)
    # Same seed, deterministic ops, same pinned TensorFlow: the subprocess runner's exact number.
    local = longtail_run(stack, tmp_path / "subprocess", "subprocess")
    assert local.returncode == 0, local.stderr[-3000:]
    subprocess_run = client.get_run(run_id(local))
    assert container_run.data.metrics["eval_macro_f1"] == subprocess_run.data.metrics["eval_macro_f1"]
    # A tiny model's F1 moves in coarse steps; the losses show the two runs computed the same numbers.
    for metric in ("loss", "val_loss"):
        assert ([m.value for m in client.get_metric_history(container_run.info.run_id, metric)]
                == [m.value for m in client.get_metric_history(subprocess_run.info.run_id, metric)]), metric


def test_s3_server_killed_during_ingest_then_a_rerun_succeeds(stack, tmp_path):
    """SeaweedFS is SIGKILLed the moment the ingest step's container starts: a one-line error naming
    the failed run, no partial HDF5 in the ingest output, and the same command succeeds after a restart."""
    server: SeaweedServer = stack["server"]
    seen = {"ingest": False, "killed": False}

    def kill_at_ingest(line: str) -> None:
        if "Executing task" in line and "'ingest'" in re.sub(r"\x1b\[[0-9;]*m", "", line):
            seen["ingest"] = True
        elif seen["ingest"] and not seen["killed"] and f": image {image_ref('ingest')}" in line:
            server.kill()
            seen["killed"] = True

    try:
        failed = longtail_run(stack, tmp_path / "home", "container", on_line=kill_at_ingest)
    finally:
        server.start()  # same port, same keys, objects kept on disk
    assert seen["killed"], "the ingest step never started"
    assert failed.returncode == 2, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("longtail run: error: step 'ingest' failed: ") and "unreachable" in last, last
    assert "full log: " in last
    assert "Traceback" not in failed.stderr
    assert f"endpoint {server.url}" in failed.stdout and "unreachable" in failed.stdout, failed.stdout[-3000:]
    root = tmp_path / "home" / "pipeline-root"
    (failed_run,) = [d for d in root.iterdir() if d.is_dir()]  # beside it: the run's log file
    # The killed task left nothing; no temp file anywhere. kfp.local orders independent tasks as it
    # likes, so the test split's ingest (ingest-2) may have finished first: its file must then be whole.
    killed = [p for p in (failed_run / "ingest").rglob("*") if p.is_file()]
    assert not killed, f"partial ingest output: {killed}"
    temps = [p for p in failed_run.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert not temps, f"temp files left: {temps}"
    for finished in failed_run.rglob("*.h5"):
        assert finished.relative_to(failed_run).parts[0] == "ingest-2", finished
        images, _, ids = read_arrays(finished)  # raises on a truncated or half-written file
        assert len(images) == len(ids) > 0, finished
    again = longtail_run(stack, tmp_path / "home", "container")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "submission:" in again.stdout
    (rerun,) = [d for d in root.iterdir() if d.is_dir() and d != failed_run]
    assert sorted(p.name for p in (rerun / "ingest" / "data").glob("*.h5")) == ["train.h5", "val.h5"]


def test_the_train_image_trains_in_bfloat16(stack, tmp_path):
    """train.precision reaches the train step's container, which trains under mixed_bfloat16 and says so."""
    done = longtail_run(stack, tmp_path / "bf16", "container", sets=("train.precision=mixed_bfloat16",))
    assert done.returncode == 0, done.stderr[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert re.search(r"Executing task 'train'\n(?:.*\n)*?\s+container [0-9a-f]+: image " + re.escape(image_ref("train")),
                     plain), plain[-3000:]
    assert "training in mixed_bfloat16 (train.precision: mixed_bfloat16)" in plain, plain[-3000:]
    run = mlflow.MlflowClient(tracking_uri=stack["mlflow"]).get_run(run_id(done))
    assert run.data.params["train.precision"] == "mixed_bfloat16"
    assert run.data.params["train.precision_used"] == "mixed_bfloat16"
    (record,) = (tmp_path / "bf16").rglob("train/model/training.json")
    assert json.loads(record.read_text()) == {"precision": "mixed_bfloat16"}


def _unit_helper(name: str):
    """A helper module of tests/unit (Katib's behaviour re-done in Python, the kind e2e's script), loaded by path."""
    path = REPO / "tests" / "unit" / f"{name}.py" if name != "kind_katib_e2e" else REPO / "scripts" / f"{name}.py"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_the_katib_trial_runs_in_the_train_image_and_prints_its_metric_lines(digits_lt, tmp_path):
    """The kind e2e's Katib trial in its image: the Experiment's own command, rewritten as Katib's webhook
    rewrites it, run by podman under the trial pod's security context (uid 10001, read-only root, every
    capability dropped, no privilege escalation) with the pod's mounts (the ConfigMap laid out as the
    kubelet lays it, home and /tmp as emptyDirs, the collector's folder), on digits-lt ingested at 16 px.
    It exits 0 and writes the metric lines Katib's StdOut collector reads, then the completion marker."""
    from longtail import katib

    emulation, e2e = _unit_helper("katib_emulation"), _unit_helper("kind_katib_e2e")
    engine = shutil.which("podman")
    if engine is None:
        pytest.fail("podman is not installed; apt-get install podman runc")
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "containers.conf"))}
    longtail = Path(sys.executable).with_name("longtail")
    subprocess.run([str(longtail), "ingest", str(digits_lt / "train"), str(tmp_path / "splits"), "--image-size", "16"],
                   check=True, capture_output=True, timeout=300)
    _, (config_map, experiment) = e2e.e2e_documents(tmp_path, "katib-container", "/data")
    pod = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    image = container["image"]
    probe = subprocess.run([engine, "run", "--rm", image, "longtail", "trial", "--help"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, f"{image} has no `longtail trial`: run `make images` ({probe.stderr.strip()[-500:]})"

    # The ConfigMap as the kubelet mounts it: the file is a link into a timestamped folder.
    config = tmp_path / "config"
    data = config / "..2026_01_01_00_00_00.000000001"
    data.mkdir(parents=True)
    (data / katib.CONFIG_FILE).write_text(config_map["data"][katib.CONFIG_FILE])
    (config / "..data").symlink_to(data.name)
    (config / katib.CONFIG_FILE).symlink_to(f"..data/{katib.CONFIG_FILE}")
    metrics = tmp_path / "katib"
    metrics.mkdir(mode=0o777)
    metrics.chmod(0o777)  # an emptyDir: writable by the pod's user
    for folder in (config, data, tmp_path / "splits"):
        folder.chmod(0o755)

    values = emulation.suggestion(experiment, "katib-container-8dk2m0qa", katib.TRIAL_NAME_PARAMETER)
    command = emulation.substitute(emulation.wrapped_command(container["command"], container["args"]), values)
    pod_sc, sc = pod["securityContext"], container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"] and not sc["allowPrivilegeEscalation"]
    # The step environment's names, with stand-in values: the tracking store in home, no S3 (local splits).
    stand_in = {"MLFLOW_TRACKING_URI": f"sqlite:///{katib.HOME}/mlflow.db"}
    env_args = sum((["--env", f"{e['name']}={stand_in.get(e['name'], 'unused-here')}"] for e in container["env"]), [])
    run = [engine, "run", "--rm", "--network", "none",
           "--user", f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}", "--read-only",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "--volume", f"{config}:{katib.CONFIG_MOUNT}:ro", "--volume", f"{tmp_path / 'splits'}:/data:ro",
           "--volume", f"{metrics}:{emulation.METRICS_DIR}",
           # emptyDirs: writable by the pod's user (U=true: podman would keep the image folder's root owner)
           "--mount", f"type=tmpfs,destination={katib.HOME},tmpfs-mode=1777,U=true",
           "--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777",
           *env_args, "--entrypoint", json.dumps(command[:2]), image, *command[2:]]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=900)
    log = (metrics / "metrics.log").read_text() if (metrics / "metrics.log").is_file() else ""
    assert done.returncode == 0, log[-3000:] + done.stderr[-2000:]
    (marker,) = metrics.glob("*.pid")
    assert marker.read_text().strip() == "completed"
    assert marker.stat().st_uid == pod_sc["runAsUser"], "the trial ran as the pod's user"

    names = ["val_macro_f1", "val_macro_f1_low", "val_macro_f1_high"]
    observations = emulation.collect(log, names)
    objective = [o for o in observations if o.name == names[0]]
    epochs = int(values["train.epochs"])
    assert len(objective) == epochs + 1, log[-3000:]  # one per epoch, then the evaluation's
    assert all(o.timestamp != emulation.NO_TIMESTAMP for o in observations), observations
    assert [o.timestamp for o in observations] == sorted(o.timestamp for o in observations)
    assert 0.0 <= float(objective[-1].value) <= 1.0
    assert {o.name for o in observations} == set(names)
    assert f"trial katib-container-8dk2m0qa: val_macro_f1 {float(objective[-1].value):.4f}" in log
