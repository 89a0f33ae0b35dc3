"""The built images hold no credential, in any layer or in their config, and run as a non-root user.

Reads what the engine stores (`podman image inspect`/`history` and each layer's files on disk), so a
secret added in one layer and deleted in the next is still found. Deselected from `make test`;
`make test-containers` runs it after `make images`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from longtail.components.images import image_refs

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.containers

# File names that only ever hold credentials (or the build-time secret mount), wherever they sit.
CREDENTIAL_FILES = {".netrc", ".pypirc", ".git-credentials", "credentials", "s3.env", "identities.json",
                    "id_rsa", "id_ed25519", ".env", "pip.conf", "ca-bundle"}
# Text files are read outside installed packages (their test data and docs hold example keys).
NOT_READ = ("site-packages", "dist-packages", "usr/share", "usr/lib/python3", "usr/local/lib/python3")
MAX_READ = 256 * 1024


def _patterns():
    """The repo's credential patterns (tests/unit/test_static_secrets.py): one list for files and images."""
    path = REPO / "tests" / "unit" / "test_static_secrets.py"
    spec = importlib.util.spec_from_file_location("static_secrets_patterns", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(path.parent))  # it imports its sibling static_toolchain
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module.findings


def engine() -> str:
    found = shutil.which("podman") or shutil.which("docker")
    if not found:
        pytest.fail("neither podman nor docker is installed; apt-get install podman runc")
    return found


def inspect(ref: str) -> dict:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "containers.conf"))}
    done = subprocess.run([engine(), "image", "inspect", ref], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, f"{ref} is not built: run `make images` ({done.stderr.strip()})"
    return json.loads(done.stdout)[0]


def layer_dirs(info: dict) -> list[Path]:
    """The overlay diff folder of every layer of the image (lowest first)."""
    data = info.get("GraphDriver", {}).get("Data", {})
    lower = [Path(p) for p in data.get("LowerDir", "").split(":") if p]
    dirs = list(reversed(lower)) + ([Path(data["UpperDir"])] if data.get("UpperDir") else [])
    assert dirs and all(d.is_dir() for d in dirs), f"layers not readable as overlay folders: {data}"
    return dirs


def debian_package_files(layers: list[Path]) -> dict[str, str]:
    """path -> md5 of every file a Debian package installed (dpkg's md5sums and conffiles)."""
    sums: dict[str, str] = {}
    for layer in layers:
        for listing in (layer / "var" / "lib" / "dpkg" / "info").glob("*.md5sums"):
            for line in listing.read_text(errors="replace").splitlines():
                digest, _, path = line.partition("  ")
                sums[path] = digest
        status = layer / "var" / "lib" / "dpkg" / "status"
        if status.is_file():  # conffiles (/etc) are listed there: " /etc/path <md5>"
            for line in status.read_text(errors="replace").splitlines():
                parts = line.split()
                if line.startswith(" /") and len(parts) >= 2 and len(parts[1]) == 32:
                    sums[parts[0].lstrip("/")] = parts[1]
    return sums


def as_shipped(path: str, rel: str, packaged: dict[str, str]) -> bool:
    """True for a file exactly as its Debian package ships it (e.g. openssl.cnf's demo CMP secret)."""
    return rel in packaged and hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest() == packaged[rel]


def layer_findings(layer: Path, findings, packaged: dict[str, str] | None = None) -> list[str]:
    out = []
    packaged = packaged or {}
    for root, _, files in os.walk(layer):
        rel_root = os.path.relpath(root, layer)
        for name in files:
            rel = os.path.join(rel_root, name)
            if name in CREDENTIAL_FILES or name.endswith(".env") or rel.startswith("run/secrets/"):
                out.append(f"{rel}: credential file")
                continue
            path = os.path.join(root, name)
            if any(part in rel for part in NOT_READ):
                continue
            try:
                st = os.lstat(path)
                # Regular files only: a base made by debootstrap has device nodes (/dev/zero never ends).
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_READ:
                    continue
                text = Path(path).read_text()
                if as_shipped(path, os.path.normpath(rel), packaged):
                    continue
            except (UnicodeDecodeError, OSError):
                continue
            out += findings(text, rel)
    return out


def image_findings(ref: str, findings) -> list[str]:
    """Everything credential-like in the image's config, history and layers; [] when clean."""
    info = inspect(ref)
    config = info.get("Config", {})
    out = findings("\n".join(config.get("Env") or []), f"{ref} config Env")
    out += findings(json.dumps(config.get("Labels") or {}), f"{ref} config Labels")
    out += [f"{ref} config Env: {e.split('=')[0]}" for e in config.get("Env") or []
            if e.split("=")[0].startswith("AWS_") or "SECRET" in e.split("=")[0]]
    history = subprocess.run([engine(), "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref],
                             capture_output=True, text=True, timeout=60)
    assert history.returncode == 0, history.stderr
    out += findings(history.stdout, f"{ref} history")
    out += [f"{ref} history: the CA bundle copied into a layer" for line in history.stdout.splitlines()
            if "ca-certificates.crt" in line and ("COPY" in line or "ADD" in line)]
    layers = layer_dirs(info)
    packaged = debian_package_files(layers)
    for layer in layers:
        out += [f"{ref} layer {layer.parent.name[:12]}: {f}" for f in layer_findings(layer, findings, packaged)]
    return out


REFS = image_refs()


@pytest.mark.parametrize("name", list(REFS))
def test_image_user_is_numeric_and_not_root(name):
    user = inspect(REFS[name])["Config"].get("User", "")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, f"{REFS[name]} runs as {user!r}"


def test_the_layer_scan_finds_what_it_is_for(tmp_path):
    findings = _patterns()
    (tmp_path / "root" / ".aws").mkdir(parents=True)
    (tmp_path / "root" / ".aws" / "credentials").write_text("[default]\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app.conf").write_text("aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\n")
    (tmp_path / "run" / "secrets").mkdir(parents=True)
    (tmp_path / "run" / "secrets" / "x").write_text("leak")
    found = layer_findings(tmp_path, findings)
    assert len(found) == 3, found


def test_no_layer_config_or_history_holds_a_credential():
    findings = _patterns()
    found = {name: image_findings(ref, findings) for name, ref in REFS.items()}
    assert found == {name: [] for name in REFS}
