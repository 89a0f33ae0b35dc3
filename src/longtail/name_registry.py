"""Builders registered by name and chosen by a config field: the shape shared by models and losses."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import math
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from longtail.errors import ConfigError

Builder = Callable[..., Any]
# A builder's declared upper bounds: argument name -> the largest value it takes (each value of a list).
Maxima = dict[str, float]


class Registry:
    """Name -> builder, filled by a decorator in each builder's own module, with each builder's `maxima`.

    Args:
        kind: what is registered ("model", "loss"), for messages.
        config_field: the config field that names a builder, for messages ("model.name").
    """

    def __init__(self, kind: str, config_field: str) -> None:
        self.kind = kind
        self.config_field = config_field
        self.builders: dict[str, Builder] = {}
        self.maxima: dict[str, Maxima] = {}

    def register(self, name: str, *, maxima: Maxima | None = None) -> Callable[[Builder], Builder]:
        """A decorator registering a builder under `name` (a second builder under one name is a bug).

        Args:
            maxima: the largest value of each numeric argument (of each value, for a list): a literal
                dict, so the config check reads it from the source without importing the builder
                (declared_maxima). Write why each value is far above real use beside it.
        """

        def decorate(builder: Builder) -> Builder:
            if name in self.builders and self.builders[name] is not builder:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self.builders[name] = builder
            self.maxima[name] = dict(maxima or {})
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
    return [name for name, _ in _registrations(path, decorator)]


def _registrations(path: Path, decorator: str) -> list[tuple[str, Maxima]]:
    """(name, maxima) of each `@decorator("name", maxima={...})` in one module's source, in the order written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == decorator
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            maxima = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "maxima"), {})
            found.append((node.args[0].value, maxima))
    return found


@functools.cache
def declared_maxima(folder: str | Path, decorator: str) -> dict[str, Maxima]:
    """Each name's `maxima` as `@decorator` declares them in the modules of `folder`, read from their source."""
    return {name: maxima for path in sorted(Path(folder).glob("*.py")) for name, maxima in _registrations(path, decorator)}


def declared_in_package(package: str, decorator: str) -> list[str]:
    """declared_names over the folder(s) of `package`, found without importing it; [] where there is no
    source to read (a bytecode-only or zipped install): the caller then asks the registry itself."""
    return sorted({name for folder in _folders(package) for name in declared_names(folder, decorator)})


def maxima_in_package(package: str, decorator: str) -> dict[str, Maxima]:
    """declared_maxima over the folder(s) of `package`, found without importing it."""
    return {name: maxima for folder in _folders(package) for name, maxima in declared_maxima(folder, decorator).items()}


def _folders(package: str) -> list[str]:
    """The folders holding `package`'s modules, found without importing it."""
    spec = importlib.util.find_spec(package)
    return list(spec.submodule_search_locations or []) if spec else []


def is_number(value: Any) -> bool:
    """A finite int or float (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_maxima(args: Mapping[str, Any], maxima: Mapping[str, float], field: str) -> None:
    """Refuse a number in `args` (or in a list there) above its declared maximum; the type and the lower
    bound of each argument are its builder's to check.

    Args:
        field: the config field holding `args`, for the message ("model.args").

    Raises:
        ConfigError: "config field <field>.<arg> must be <= <maximum>, got <value>".
    """
    for key, high in maxima.items():
        value = args.get(key)
        values = value if isinstance(value, list | tuple) else [value]
        # `not v <= high` refuses NaN and infinity too
        if any(isinstance(v, int | float) and not isinstance(v, bool) and not v <= high for v in values):
            # 1e30 arrives as an int of 31 digits (a whole float becomes an int in the config): shown as 1e+30
            shown = f"{value:g}" if isinstance(value, int | float) and abs(value) >= 1e15 else repr(value)
            raise ConfigError(f"config field {field}.{key} must be <= {high:g}, got {shown}")


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
