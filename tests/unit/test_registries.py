"""The model and loss registries hold every builder their folders declare.

`import longtail.models` (or `.losses`) alone registers each module with a decorator, so the names the
config check reads from the source are the names training can build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from longtail.name_registry import declared_in_package, declared_in_source

SRC = Path(__file__).resolve().parents[2] / "src" / "longtail"
REGISTRIES = [
    ("longtail.models", SRC / "models", "register_model", "available_models"),
    ("longtail.losses", SRC / "losses", "register_loss", "available_losses"),
]


def registered_in_a_fresh_interpreter(package: str, names: str) -> tuple[list[str], list[str]]:
    """What importing `package` alone registers, and the package's modules that import leaves loaded:
    in a process of its own, so no other test's direct import of a module can register it here."""
    code = (f"import json, sys, {package} as p; "
            f"print(json.dumps([p.{names}(), sorted(m for m in sys.modules if m.startswith('{package}.'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    registered, modules = json.loads(out.splitlines()[-1])
    return registered, modules


@pytest.mark.parametrize(("package", "folder", "decorator", "names"), REGISTRIES)
def test_every_file_with_a_register_decorator_is_imported_and_registered(package, folder, decorator, names):
    registered, modules = registered_in_a_fresh_interpreter(package, names)
    files = [path for path in sorted(folder.glob("*.py")) if declared_in_source(path, decorator)]
    assert len(files) >= 3, files
    for path in files:
        assert f"{package}.{path.stem}" in modules, f"{path.name} is not imported by {package}"
        missing = set(declared_in_source(path, decorator)) - set(registered)
        assert not missing, f"{path.name} declares {sorted(missing)}, which {package} does not register"
    # The config check reads the names from the source (no TensorFlow): the same list.
    assert declared_in_package(package, decorator) == registered
