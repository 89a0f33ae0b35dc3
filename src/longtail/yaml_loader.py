"""The hardened YAML loader every config and sweep file goes through.

Aliases and duplicate keys are refused, numbers follow YAML 1.2, and every failure is one line naming
the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from longtail.errors import ConfigError
from longtail.file_bounds import CONFIG_MAX_BYTES, read_bounded


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases: a config has no need for them, and an alias bomb
    (a few hundred bytes naming each other) expands into gigabytes in any walk over the tree."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"YAML alias *{event.anchor} at line {event.start_mark.line + 1} is not allowed in a config; "
                "write the value out in full"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """Refuse a key given twice in one mapping (PyYAML keeps the last one silently)."""
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    raise ConfigError(
                        f"duplicate key {key_node.value!r} at line {line} (first at line {first[key_node.value]}); "
                        "keep one"
                    )
                first[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 numbers: PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so
# 1e-3 and 5E4 would load as strings.
_NoAliasLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str, where: str) -> Any:
    """Parse config YAML (aliases refused) with any failure as a one-line ConfigError naming `where`."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be a config") from None


def read_yaml_file(path: str | Path) -> Any:
    """A config or sweep YAML file's content, with each way it can be unreadable a one-line ConfigError
    (a folder or FIFO, a file over file_bounds.CONFIG_MAX_BYTES: refused before it is read)."""
    path = Path(path)
    data = read_bounded(path, f"config file {path}", CONFIG_MAX_BYTES, ConfigError)
    if data is None:
        raise ConfigError(f"config file not found: {path}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    return load_yaml(text, f"config file {path}")
