"""Builders registered by name and chosen by a config field: the shape shared by models and losses."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from longtail.errors import ConfigError

Builder = Callable[..., Any]


class Registry:
    """Name -> builder, filled by a decorator in each builder's own module.

    Args:
        kind: what is registered ("model", "loss"), for messages.
        config_field: the config field that names a builder, for messages ("model.name").
    """

    def __init__(self, kind: str, config_field: str) -> None:
        self.kind = kind
        self.config_field = config_field
        self.builders: dict[str, Builder] = {}

    def register(self, name: str) -> Callable[[Builder], Builder]:
        """A decorator registering a builder under `name` (a second builder under one name is a bug)."""

        def decorate(builder: Builder) -> Builder:
            if name in self.builders and self.builders[name] is not builder:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self.builders[name] = builder
            return builder

        return decorate

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self.builders)

    def get(self, name: str) -> Builder:
        """The builder registered as `name`.

        Raises:
            ConfigError: naming the config field and the known names.
        """
        if name not in self.builders:
            raise ConfigError(
                f"config field {self.config_field}: unknown {self.kind} {name!r}; "
                f"known {self.kind}{'es' if self.kind.endswith('s') else 's'}: {', '.join(self.names())}"
            )
        return self.builders[name]


@functools.cache  # a sweep validates many configs; the modules do not change while it runs
def declared_names(folder: str | Path, decorator: str) -> list[str]:
    """Names registered with `@decorator("name")` in the modules of `folder`, read from their source.

    Checking a config's choice this way imports nothing: model modules import Keras, whose
    TensorFlow start-up takes seconds, and a typo in a name is better refused before that.
    """
    return sorted(name for path in sorted(Path(folder).glob("*.py")) for name in declared_in_source(path, decorator))


def declared_in_source(path: Path, decorator: str) -> list[str]:
    """Names registered with `@decorator("name")` in one module's source, in the order written."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == decorator
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append(node.args[0].value)
    return names


def declared_in_package(package: str, decorator: str) -> list[str]:
    """declared_names over the folder(s) of `package`, found without importing it; [] where there is no
    source to read (a bytecode-only or zipped install): the caller then asks the registry itself."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    return sorted({name for folder in folders for name in declared_names(folder, decorator)})


def import_modules(package: str, path: Iterable[str]) -> list[str]:
    """Import every module of a package, given its `__name__` and `__path__`, so that each module's
    decorator registers its builders.

    A registry's package calls this from its `__init__`: the folder is then the one list of builders.
    A new builder is its file, and the names declared_in_package reads from the source (the config
    check's, before TensorFlow) are the names the registry holds.

    Returns:
        The modules' names within the package, sorted.
    """
    names = sorted(info.name for info in pkgutil.iter_modules(list(path)))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
