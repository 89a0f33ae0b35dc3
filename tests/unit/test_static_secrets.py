"""No credential in any manifest, image file, script, workflow, golden file or compiled pipeline.

Credentials reach the cluster only through Secrets generated from uncommitted env files
(manifests/base/*.env) and reach pods only as secretKeyRef / kfp-kubernetes secret env vars.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from static_toolchain import GOLDEN_DIR, REPO, kustomizations, render

PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key literal": re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*[\"']?[A-Za-z0-9/+=]{20,}"),
    "MinIO default credentials": re.compile(r"(?i)minioadmin"),
    # On one line: a YAML key whose value is a mapping below it (a Pod's `secret:` volume) holds no literal.
    "password/secret/token literal": re.compile(
        r"(?i)\b(password|passwd|secret|token)\b[ \t]*[:=][ \t]*[\"']?(?![\"'$<{(])[^\s\"']{6,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
# Files this scan covers: everything that ends up in an image, a cluster or a workflow.
SCANNED = ["manifests", "images", "scripts", ".github", "tests/e2e", "tests/golden"]
SINGLE_FILES = [".dockerignore", ".hadolint.yaml", "Makefile"]


def findings(text: str, where: str) -> list[str]:
    return [f"{where}: {label}: {m.group(0)[:40]!r}"
            for label, pattern in PATTERNS.items() for m in pattern.finditer(text)]


def scanned_files():
    for top in SCANNED:
        root = REPO / top
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.suffix != ".env" and "__pycache__" not in path.parts:
                    yield path
    for name in SINGLE_FILES:
        if (REPO / name).is_file():
            yield REPO / name


def test_the_patterns_catch_what_they_are_for():
    assert findings("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "x")
    assert findings("aws_secret_access_key: wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY", "x")
    assert findings("MINIO_ROOT_USER=minioadmin", "x")
    assert findings("password: hunter2hunter2", "x")
    assert not findings("key: MINIO_ROOT_PASSWORD", "x")
    assert not findings('password="${MINIO_ROOT_PASSWORD}"', "x")
    assert not findings("MINIO_ROOT_PASSWORD=", "x")
    assert not findings("secret:\n  secretName: postgres", "x")


def test_no_secret_in_repo_files():
    found = []
    for path in scanned_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += findings(text, str(path.relative_to(REPO)))
    assert not found, "\n".join(found)


def test_no_env_file_with_credentials_is_tracked():
    result = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    env_files = [f for f in result.stdout.splitlines() if f.endswith(".env") or "/.env" in f]
    assert not env_files, f"env files would be committed: {env_files}"


def test_no_secret_in_rendered_manifests(tmp_path):
    for name in kustomizations():
        for obj in render(name, tmp_path):
            if obj["kind"] == "Secret":
                continue  # generated from the env files; the test copy holds test-only values
            found = findings(yaml.safe_dump(obj), f"{name}: {obj['kind']} {obj['metadata']['name']}")
            assert not found, "\n".join(found)


def test_golden_render_holds_no_secret_value():
    golden = GOLDEN_DIR / "manifests-kind.yaml"
    if not golden.is_file():
        pytest.skip("no golden render yet")
    text = golden.read_text()
    assert "test-only-" not in text
    for doc in yaml.safe_load_all(text):
        if doc and doc["kind"] == "Secret":
            assert set(doc.get("data", {}).values()) <= {"<redacted>"}, doc["metadata"]["name"]
            assert "stringData" not in doc


def test_no_secret_in_compiled_pipelines(tmp_path):
    from longtail.pipelines.compile import compile_all

    for path in compile_all(tmp_path):
        text = path.read_text()
        found = findings(text, path.name)
        assert not found, "\n".join(found)
        for doc in yaml.safe_load_all(text):
            for name, _value in _env_literals(doc):
                assert not re.search(r"(?i)(SECRET|PASSWORD|TOKEN|ACCESS_KEY)", name), (
                    f"{path.name}: {name} set as a literal env var; use a Secret")


def _env_literals(node):
    """(name, value) of every literal env entry in a compiled pipeline spec."""
    if isinstance(node, dict):
        if "name" in node and "value" in node and len(node) == 2 and isinstance(node["name"], str):
            yield node["name"], node["value"]
        for value in node.values():
            yield from _env_literals(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_literals(item)
