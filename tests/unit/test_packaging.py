"""The wheel the step images install holds every subpackage of the library (pyproject lists them by hand)."""

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]


def test_every_library_subpackage_is_in_the_wheel():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = REPO / "src"
    on_disk = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
