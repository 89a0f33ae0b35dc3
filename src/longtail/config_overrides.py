"""`key=value` overrides (`--set`, a sweep's grid) applied to a raw config mapping, values parsed as YAML."""

from __future__ import annotations

from typing import Any

import yaml

from longtail.errors import ConfigError
from longtail.yaml_loader import load_yaml


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'train.lr.power=2.5' into (['train', 'lr', 'power'], 2.5), the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=3")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    return parts, load_yaml(value, f"override {text!r}: the value") if value.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each key=value override set (nested keys with dots)."""
    out = yaml.safe_load(yaml.safe_dump(raw or {}))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {p} is not a section")
            node = child
        node[parts[-1]] = value
    return out
