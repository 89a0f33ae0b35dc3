"""scripts/kind-*.sh checked without Docker: bash syntax, strict mode, versions that agree."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata

import pytest
import yaml
from static_toolchain import MANIFESTS, REPO, require_tool

SCRIPTS = sorted((REPO / "scripts").glob("kind-*.sh"))


def test_the_kind_scripts_exist():
    assert {p.name for p in SCRIPTS} >= {"kind-up.sh", "kind-e2e.sh", "kind-down.sh", "kind-lib.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_runs_in_strict_mode(script):
    bash = require_tool("bash", how="install bash")
    result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    if script.name != "kind-lib.sh":  # sourced by the others
        assert "set -euo pipefail" in text
        assert "source scripts/kind-lib.sh" in text
    assert "set -x" not in text, "tracing would print credentials"


def test_kfp_backend_version_matches_the_sdk_minor():
    lib = (REPO / "scripts" / "kind-lib.sh").read_text()
    backend = re.search(r'KFP_VERSION="\$\{KFP_VERSION:-(\d+\.\d+)\.\d+\}"', lib).group(1)
    sdk = ".".join(metadata.version("kfp").split(".")[:2])
    assert backend == sdk, f"KFP backend {backend}.x installed by kind-up.sh, kfp SDK {sdk}.x in .venv"


def test_kind_up_applies_the_kind_overlay_and_the_pinned_kfp_install():
    up = (REPO / "scripts" / "kind-up.sh").read_text()
    assert "manifests/kind/cluster.yaml" in up and "apply -k manifests/overlays/kind" in up
    assert "cluster-scoped-resources?ref=${KFP_VERSION}" in up
    assert "env/platform-agnostic?ref=${KFP_VERSION}" in up
    cluster = yaml.safe_load((MANIFESTS / "kind" / "cluster.yaml").read_text())
    assert cluster["name"] == "longtail"
