"""The search-space language of an experiment file's `search:` block, read by `sweep --grid`, `tune` and Katib.

    search:
      train.lr.initial: {loguniform: [0.02, 0.4]}
      train.augmentation.erase: {uniform: [0, 0.6]}
      train.epochs: {int: [10, 40]}
      train.loss: {choice: [{name: logit_adjusted, args: {tau: 1.0}}, {name: cross_entropy, args: {}}]}

Each key is a config field (dotted, as `--set` takes it); each value one of four distributions. A
range's ends are checked against the field's own declared bounds (longtail.config) by building the
base config with each end: a range the config would refuse is a one-line error before any training.
A grid is the same language with `choice` only: `--grid KEY=V1,V2` is shorthand for
`KEY: {choice: [V1, V2]}`, and its points are every combination, in the order written.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from longtail.config import ExperimentConfig, config_from_dict
from longtail.config_overrides import apply_overrides, parse_override
from longtail.errors import ConfigError
from longtail.yaml_loader import load_yaml

KINDS = ("loguniform", "uniform", "int", "choice")
SEARCH_SYNTAX = "{loguniform: [LOW, HIGH]}, {uniform: [LOW, HIGH]}, {int: [LOW, HIGH]} or {choice: [V1, V2, ...]}"
MAX_DIMENSIONS, MAX_CHOICES = 64, 256  # a typo's guard: no real search has more


@dataclass(frozen=True)
class Dimension:
    """One searched field: `key` (dotted config path), its distribution `kind`, and its range or choices."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    def labels(self) -> list[Any]:
        """The choices as values a sampler stores: numbers, strings, booleans and null as they are;
        a list or mapping as its one-line YAML (`{name: focal, args: {gamma: 2}}`)."""
        return [choice_label(c) for c in self.choices]

    def value_of(self, label: Any) -> Any:
        """The choice a label names (labels() inverted)."""
        for choice in self.choices:
            if choice_label(choice) == label:
                return choice
        raise ConfigError(f"search {self.key}: {label!r} is not one of its choices")

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key}: {{choice: {yaml_flow(list(self.choices))}}}"
        return f"{self.key}: {{{self.kind}: [{self.low}, {self.high}]}}"


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of one search, in the order written."""

    dimensions: tuple[Dimension, ...]

    @property
    def is_grid(self) -> bool:
        """Only choices: the space is a grid, enumerable by grid_points()."""
        return all(d.kind == "choice" for d in self.dimensions)

    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the choices (the first dimension varies slowest).

        Raises:
            ConfigError: a dimension is a range, not a choice.
        """
        ranges = [d.describe() for d in self.dimensions if d.kind != "choice"]
        if ranges:
            raise ConfigError(f"a grid takes choices only; {', '.join(ranges)} is a range: use `longtail tune`")
        return [dict(zip(self.keys(), combo, strict=True))
                for combo in itertools.product(*(d.choices for d in self.dimensions))]

    def size(self) -> int | None:
        """How many points a grid has; None for a space with a range."""
        return math.prod(len(d.choices) for d in self.dimensions) if self.is_grid else None

    def point_of(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        """The point a raw config sits at (each searched field's value), or None when a value lies
        outside its dimension (a range it is not in, a choice it is not one of)."""
        point = {}
        for d in self.dimensions:
            node: Any = raw
            for part in d.key.split("."):
                if not isinstance(node, dict) or part not in node:
                    return None
                node = node[part]
            if d.kind == "choice":  # equal as values: {tau: 1} is {tau: 1.0}, in any key order
                matches = [c for c in d.choices if c == node]
                if not matches:
                    return None
                point[d.key] = matches[0]
            elif isinstance(node, (int, float)) and not isinstance(node, bool) and d.low <= node <= d.high:
                point[d.key] = node
            else:
                return None
        return point

    def as_dict(self) -> dict[str, Any]:
        """The `search:` block this space was read from (for MLflow params and the best config's file)."""
        out: dict[str, Any] = {}
        for d in self.dimensions:
            out[d.key] = {"choice": list(d.choices)} if d.kind == "choice" else {d.kind: [d.low, d.high]}
        return out


def choice_label(value: Any) -> Any:
    """A choice as a sampler-storable label: scalars as they are, anything else its one-line YAML."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml_flow(value)


def yaml_flow(value: Any) -> str:
    """`value` as one line of YAML (what `--set KEY=...` takes)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip().removesuffix("...").strip()


def parse_search(block: Any, base: dict[str, Any], where: str = "search") -> SearchSpace:
    """Read and check a `search:` block against `base`, the raw config the sampled values go into.

    Raises:
        ConfigError: one line naming the entry: an unknown kind, a malformed range, a choice list with
            fewer than two values, or a range end or choice the config's own bounds refuse.
    """
    if not isinstance(block, dict) or not block:
        raise ConfigError(f"{where} must map config fields to {SEARCH_SYNTAX}, got {block!r}")
    if len(block) > MAX_DIMENSIONS:
        raise ConfigError(f"{where} has {len(block)} entries; at most {MAX_DIMENSIONS}")
    dims = tuple(_dimension(str(key), spec, where) for key, spec in block.items())
    for dim in dims:
        _check_against_config(dim, base, where)
    return SearchSpace(dims)


def grid_space(grid: list[str], base: dict[str, Any]) -> SearchSpace:
    """`--grid KEY=V1,V2,...` axes as the search space they are shorthand for (`KEY: {choice: [V1, V2, ...]}`).

    Raises:
        ConfigError: an axis without `=`, with fewer than two values, or a value the config refuses.
    """
    block: dict[str, Any] = {}
    for text in grid:
        parts, _ = parse_override(text)
        values = [load_yaml(v, f"grid axis {text!r}: value {v.strip()!r}")
                  for v in text.split("=", 1)[1].split(",") if v.strip()]
        if len(values) < 2:
            raise ConfigError(f"grid axis {text!r} needs at least two comma-separated values")
        block[".".join(parts)] = {"choice": values}
    return parse_search(block, base, where="--grid")


def apply_point(base: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config `base` with each searched field set to the point's value."""
    return apply_overrides(base, [f"{key}={yaml_flow(value)}" for key, value in point.items()])


def config_at(base: dict[str, Any], point: dict[str, Any], name: str) -> ExperimentConfig:
    """The validated config of one point of the space, named `name`."""
    raw = apply_point(base, point)
    raw["name"] = name
    return config_from_dict(raw)


def sample(space: SearchSpace, suggest: Callable[[Dimension], Any]) -> dict[str, Any]:
    """One point: `suggest(dimension)` gives each dimension's value (an Optuna trial's suggest_* in `tune`)."""
    return {d.key: suggest(d) for d in space.dimensions}


def _dimension(key: str, spec: Any, where: str) -> Dimension:
    entry = f"{where} {key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{entry} must be one of {SEARCH_SYNTAX}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(values, list) or len(values) < 2:
            raise ConfigError(f"{entry}: choice needs a list of at least two values, got {values!r}")
        if len(values) > MAX_CHOICES:
            raise ConfigError(f"{entry}: choice has {len(values)} values; at most {MAX_CHOICES}")
        labels = [choice_label(v) for v in values]
        if len(set(map(repr, labels))) < len(labels):
            raise ConfigError(f"{entry}: choice lists a value twice: {values!r}")
        return Dimension(key, kind, choices=tuple(values))
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise ConfigError(f"{entry}: {kind} needs [LOW, HIGH], two numbers, got {values!r}")
    low, high = values
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{entry}: {kind} needs LOW < HIGH, got [{low}, {high}]")
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{entry}: int needs whole numbers, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{entry}: loguniform needs LOW > 0 (a log scale has no 0), got [{low}, {high}]")
    if kind != "int":
        low, high = float(low), float(high)
    return Dimension(key, kind, low=low, high=high)


def _check_against_config(dim: Dimension, base: dict[str, Any], where: str) -> None:
    """Build the base config with each end of the range (or each choice): the config's declared bounds decide."""
    ends = dim.choices if dim.kind == "choice" else (dim.low, dim.high)
    for value in ends:
        try:
            config_at(base, {dim.key: value}, str(base.get("name") or "search"))
        except ConfigError as e:
            what = "choice" if dim.kind == "choice" else ("low end" if value == dim.low else "high end")
            raise ConfigError(f"{where} {dim.key}: the {what} {yaml_flow(value)} is refused by the config: {e}") from None
