"""The container runner for local runs: every step in its own step image, through kfp.local.DockerRunner.

`longtail run|sweep --runner container` drives podman's Docker-compatible API (or Docker itself).
Containers share the host's network, so the S3 endpoint and the MLflow server on 127.0.0.1 are the
same addresses inside as outside; the pipeline root and any local input folders are bind-mounted at
their host paths (the inputs read-only).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from longtail.components.images import IMAGES, image_ref
from longtail.errors import LongtailError
from longtail.tracking.env import TRACKING_PASSWORD_ENV, TRACKING_URI_ENV, TRACKING_USERNAME_ENV

RUNNERS = ("subprocess", "container")
RUNNER_HELP = ("subprocess: steps in this Python (default); container: each step in its step image "
               "(podman/docker, `make images`), needs an MLflow server")
# The environment a step may need, forwarded by name (values never reach an image or the YAML):
# tracking server and its basic-auth credentials, S3 endpoint and keys for ingest from s3://, and the
# seed-independent TF settings.
FORWARDED_ENV = (TRACKING_URI_ENV, TRACKING_USERNAME_ENV, TRACKING_PASSWORD_ENV, "S3_ENDPOINT_URL",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "TF_CPP_MIN_LOG_LEVEL")
# podman's Docker API socket as `podman system service` (scripts/podman-service.sh) opens it as root.
PODMAN_SOCKET = "/run/podman/podman.sock"


class ContainerRunnerError(LongtailError):
    """The container runner cannot start: no engine, no image, or a tracking store containers cannot reach."""


def check_runner(name: str) -> str:
    """`name` if it is a known runner, else a one-line error listing them."""
    if name not in RUNNERS:
        raise ContainerRunnerError(f"unknown runner {name!r}; use one of: {', '.join(RUNNERS)}")
    return name


def absolute_sources(*uris: str) -> list[str]:
    """Local inputs as absolute paths (they are mounted at the same path inside); s3:// unchanged."""
    return [u if u.startswith("s3://") else str(Path(u).resolve()) for u in uris]


def docker_host(environ: Mapping[str, str]) -> str:
    """DOCKER_HOST, or podman's root socket when it exists, else Docker's default socket."""
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"]
    return f"unix://{PODMAN_SOCKET}" if Path(PODMAN_SOCKET).exists() else "unix:///var/run/docker.sock"


def make_docker_runner(pipeline_root: Path, sources: list[str], tracking_uri: str,
                       environ: Mapping[str, str], registry: str | None = None, tag: str | None = None):
    """A kfp.local.DockerRunner for the step images, after checking all it needs is there.

    Args:
        pipeline_root: the local pipeline root (absolute); made writable for the images' user.
        sources: data/test inputs; local ones are bind-mounted read-only at the same path.
        tracking_uri: must be an http(s) MLflow server: a SQLite file on the host is not reachable
            from a container, and the server proxies artifacts, so steps hold no S3 keys for MLflow.
        environ: the caller's environment (the CLI's os.environ); FORWARDED_ENV names pass through.

    Returns:
        The runner for `kfp.local.init(runner=...)`. Nothing in this process is changed: kfp's task
        handler finds the engine through DOCKER_HOST, which pipelines/local_session.py sets (to
        docker_host(environ)) and installs the podman workaround below, both for the session only.
    """
    import docker
    from kfp import local

    if not re.match(r"https?://", tracking_uri):
        raise ContainerRunnerError(
            f"--runner container needs an MLflow tracking server, got {tracking_uri!r}: set "
            "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (`make services` starts one)")
    host = docker_host(environ)
    try:
        client = docker.DockerClient(base_url=host)
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means "no engine there"; say how to start one
        raise ContainerRunnerError(
            f"no container engine answers at {host} ({type(e).__name__}): start podman's Docker API with "
            "scripts/podman-service.sh up, or set DOCKER_HOST") from e
    user = _check_images(client, registry, tag)
    _make_writable_for(pipeline_root, user)
    mounts = [docker.types.Mount(target=s, source=s, type="bind", read_only=True)
              for s in sources if not s.startswith("s3://")]
    env = {k: environ[k] for k in FORWARDED_ENV if environ.get(k)}
    env[TRACKING_URI_ENV] = tracking_uri
    return local.DockerRunner(network_mode="host", environment=env, mounts=mounts)


def _check_images(client, registry: str | None, tag: str | None) -> str:
    """Every step image is present; returns their (common) user, which must not be root."""
    kwargs = {k: v for k, v in (("registry", registry), ("tag", tag)) if v}
    users = set()
    for name in IMAGES:
        ref = image_ref(name, **kwargs)
        try:
            image = client.images.get(ref)
        except Exception as e:  # noqa: BLE001 - docker.errors.ImageNotFound or an API error: same fix
            raise ContainerRunnerError(f"step image {ref} not found: build the images with `make images`") from e
        user = image.attrs.get("Config", {}).get("User") or "root"
        if user.split(":")[0] in ("", "0", "root"):
            raise ContainerRunnerError(f"step image {ref} runs as root; rebuild it with `make images`")
        users.add(user)
    if len(users) != 1:
        raise ContainerRunnerError(f"step images disagree on their user ({sorted(users)}); rebuild with `make images`")
    return users.pop()


def _make_writable_for(pipeline_root: Path, user: str) -> None:
    """Let the images' non-root user create task folders under the pipeline root (not recursive)."""
    pipeline_root.mkdir(parents=True, exist_ok=True)
    uid, _, gid = user.partition(":")
    if os.geteuid() == 0 and uid.isdigit():
        os.chown(pipeline_root, int(uid), int(gid or uid))
    elif os.stat(pipeline_root).st_uid != (int(uid) if uid.isdigit() else -1):
        # Rootless engines map the image's user to a subordinate UID: only a sticky world-writable
        # root lets it write there (each task folder stays its creator's).
        pipeline_root.chmod(0o1777)


# --- Workaround: kfp 2.17 + podman 4.3 ----------------------------------------------------------
# kfp.local's run_docker_container starts every task with auto_remove=True and then calls
# container.wait(). podman's compat API races with the removal (containers/podman#25479) and
# answers 500 where docker-py expects 404, so a finished task crashes the run; and when kfp does
# see 404 it assumes exit code 0, so a failed step would count as success. This replacement is the
# same function without auto_remove: wait for the real exit code, then remove the container.
# Installed only for a local session (pipelines/local_session.py), which restores kfp's own on exit;
# the compiled pipeline and public signatures are untouched.
def run_container_then_remove(client, image: str, command: list[str], volumes: dict,
                               **container_run_args) -> int:
    import docker

    image = image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as e:
        raise ContainerRunnerError(f"step image {image} not found: build the images with `make images`") from e
    container_run_args.pop("auto_remove", None)
    container = client.containers.run(image=image, command=command, detach=True, stdout=True,
                                      stderr=True, volumes=volumes, **container_run_args)
    print(f"container {container.short_id}: image {image}")
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError as e:  # already gone, or the engine is busy: nothing to keep
            print(f"container {container.short_id}: not removed ({e})", file=sys.stderr)

