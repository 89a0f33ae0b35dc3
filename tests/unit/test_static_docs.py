"""docs/architecture.md, the design in the repository: every section the code points at exists, and
nothing points at the DESIGN.md that is not in it."""

from __future__ import annotations

import re
from pathlib import Path

from static_toolchain import REPO

ARCHITECTURE = REPO / "docs" / "architecture.md"
SOURCES = ("src", "components", "pipelines", "tests", "scripts", "benchmarks")
# `docs/architecture.md "Section"` or `docs/architecture.md, "Section"`: a pointer at one heading.
POINTER = re.compile(r'docs/architecture\.md,? "([^"]+)"')


def source_files():
    for folder in SOURCES:
        yield from sorted(p for p in (REPO / folder).rglob("*")
                          if p.suffix in (".py", ".sh") and p.resolve() != Path(__file__).resolve())
    yield REPO / "README.md"
    yield REPO / "pyproject.toml"


def test_the_code_points_only_at_sections_the_architecture_has():
    headings = {line.lstrip("#").strip() for line in ARCHITECTURE.read_text().splitlines() if line.startswith("#")}
    pointers = {}
    for path in source_files():
        for name in POINTER.findall(path.read_text(encoding="utf-8")):
            pointers.setdefault(name, path.relative_to(REPO))
    assert pointers, "no docstring points at docs/architecture.md"
    missing = {name: str(path) for name, path in pointers.items() if name not in headings}
    assert not missing, f"pointers at sections docs/architecture.md lacks: {missing}"


def test_no_file_cites_a_design_file_outside_the_repository():
    cites = [f"{path.relative_to(REPO)}:{n}" for path in source_files()
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\bDESIGN(\.md)?\b", line)]
    # model_dir.py is being rewritten elsewhere (issue 21), with its pointer at "Model directory".
    assert all(c.startswith("src/longtail/model_dir.py:") for c in cites), cites


def test_the_architecture_holds_the_layout_the_contracts_and_the_data_flow():
    text = ARCHITECTURE.read_text()
    for heading in ("## Layout", "## Data flow", "## Contracts", "### CLI", "### HDF5 splits", "### Experiment config",
                    "### Model directory", "### Evaluation folder", "### Artifacts and MLflow names",
                    "## Safety rules"):
        assert f"\n{heading}\n" in text, heading
