"""checkov over every Dockerfile and every rendered kustomization, in one run per test session.

checkov lives in its own venv (.venv-checkov, `make checkov-venv`): it pins an old `packaging`
that breaks pytest in .venv. Every skipped check must carry its reason next to the code it
excuses (`# checkov:skip=` in a Dockerfile, a `checkov.io/skipN` annotation in a manifest).
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from static_toolchain import IMAGES_DIR, REPO, kustomizations, render, require_tool


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory):
    checkov = require_tool("checkov", REPO / ".venv-checkov" / "bin" / "checkov",
                           how="run `make checkov-venv` (checkov in its own venv, .venv-checkov)")
    workdir = tmp_path_factory.mktemp("checkov")
    files = [str(p) for p in sorted(IMAGES_DIR.glob("*/Dockerfile"))]
    for name in kustomizations():
        out = workdir / f"{name.replace('/', '-')}.yaml"
        out.write_text(yaml.safe_dump_all(render(name, workdir), sort_keys=False))
        files.append(str(out))
    args = [checkov, "--framework", "dockerfile", "kubernetes", "--output", "json", "--compact",
            "--skip-download"]  # --skip-download: no network here; use the bundled checks only
    for path in files:
        args += ["--file", path]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=workdir)
    assert result.returncode in (0, 1), f"checkov crashed:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_scanned_dockerfiles_and_manifests(checkov_report):
    scanned = {r["check_type"]: r["summary"] for r in checkov_report}
    assert {"dockerfile", "kubernetes"} <= set(scanned), scanned
    for check_type, summary in scanned.items():
        assert summary["parsing_errors"] == 0, (check_type, summary)
        assert summary["passed"] > 0, (check_type, summary)


def test_checkov_finds_no_failed_check(checkov_report):
    failed = [f"{r['check_type']}: {c['check_id']} {c['check_name']} on {c['resource']}"
              for r in checkov_report for c in r["results"].get("failed_checks", [])]
    assert not failed, "checkov failed checks (fix them, or skip with a reason in the file):\n" + "\n".join(failed)


def test_every_skipped_check_states_its_reason(checkov_report):
    for r in checkov_report:
        for c in r["results"].get("skipped_checks", []):
            reason = (c["check_result"].get("suppress_comment") or "").strip()
            assert len(reason) >= 20 and reason != "No comment provided", (
                f"{c['check_id']} on {c['resource']} is skipped without a reason")
