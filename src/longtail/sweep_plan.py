"""Sweep plans: a base config times a grid, or a sweep file listing experiments, grouped by data settings."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import yaml

from longtail.config import ExperimentConfig, config_from_dict, config_to_dict, load_config
from longtail.config_overrides import apply_overrides, parse_override
from longtail.errors import ConfigError
from longtail.knobs import config_to_params
from longtail.yaml_loader import load_yaml, read_yaml_file


def parse_grid(grid: list[str]) -> list[tuple[str, list[Any]]]:
    """['train.label_smoothing.factor=0.2,0.1,0.01'] -> [('train.label_smoothing.factor', [0.2, 0.1, 0.01])]."""
    axes = []
    for text in grid:
        parts, _ = parse_override(text)
        raw_values = text.split("=", 1)[1]
        values = [load_yaml(v, f"grid axis {text!r}: value {v.strip()!r}") for v in raw_values.split(",") if v.strip()]
        if len(values) < 2:
            raise ConfigError(f"grid axis {text!r} needs at least two comma-separated values")
        axes.append((".".join(parts), values))
    return axes


def expand_grid(base: dict[str, Any], grid: list[str]) -> list[ExperimentConfig]:
    """Every combination of the grid's values applied to `base`; each named after its values."""
    axes = parse_grid(grid)
    base_name = base.get("name", "experiment")
    configs = []
    for combo in itertools.product(*(values for _, values in axes)):
        overrides = [f"{key}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for (key, _), v in zip(axes, combo, strict=True)]
        raw = apply_overrides(base, overrides)
        raw["name"] = base_name + "".join(f"-{key.split('.')[-1]}={v}" for (key, _), v in zip(axes, combo, strict=True))
        configs.append(config_from_dict(raw))
    return configs


def load_sweep(paths: list[str | Path], grid: list[str] | None = None,
               overrides: list[str] | None = None) -> list[ExperimentConfig]:
    """Configs from experiment YAMLs and/or sweep files, optionally crossed with a grid.

    A sweep file has `base:` (an experiment YAML, relative to the file), optional `set:` overrides
    for all, and `experiments:`, a list of {name, set} entries (see experiments/seed-log.yaml).

    Raises:
        ConfigError: no configs, duplicate names, or any invalid config (named).
    """
    configs: list[ExperimentConfig] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        raw = read_yaml_file(path) or {}
        if isinstance(raw, dict) and "experiments" in raw:
            configs += _sweep_file(path, raw, overrides or [])
        else:
            configs.append(load_config(path, overrides))
    if grid:
        configs = [c for cfg in configs for c in expand_grid(config_to_dict(cfg), grid)]
    if not configs:
        raise ConfigError("a sweep needs at least one experiment config")
    names = [c.name for c in configs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"experiment names must be unique in a sweep; repeated: {', '.join(dupes)}")
    return configs


def _sweep_file(path: Path, raw: dict[str, Any], overrides: list[str]) -> list[ExperimentConfig]:
    unknown = set(raw) - {"base", "set", "experiments", "name"}
    if unknown:
        raise ConfigError(f"{path}: unknown sweep field(s) {', '.join(sorted(unknown))}; known: base, set, experiments")
    base = load_config(path.parent / raw["base"], overrides) if raw.get("base") else config_from_dict({})
    common = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in (raw.get("set") or {}).items()]
    out = []
    for i, exp in enumerate(raw["experiments"] or []):
        if not isinstance(exp, dict) or "name" not in exp:
            raise ConfigError(f"{path}: experiments[{i}] needs a name")
        sets = common + [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                         for k, v in (exp.get("set") or {}).items()]
        sets = [s.removesuffix("...").strip() for s in sets]
        try:
            cfg_raw = apply_overrides(config_to_dict(base), sets)
            cfg_raw["name"] = exp["name"]
            out.append(config_from_dict(cfg_raw))
        except ConfigError as e:
            raise ConfigError(f"{path}: experiment {exp['name']}: {e}") from e
    return out


def group_by_data(configs: list[ExperimentConfig]) -> list[list[ExperimentConfig]]:
    """Configs grouped by their `data` section, data.seed (the split seed) included: each group shares one ingest.

    Configs that set only train.seed (the deprecated split seed) group as before: one ingest, split
    with the first config's train.seed; a warning names them.
    """
    groups: dict[str, list[ExperimentConfig]] = {}
    for c in configs:
        key = yaml.safe_dump(config_to_dict(c)["data"], sort_keys=True)
        groups.setdefault(key, []).append(c)
    for group in groups.values():
        if group[0].data.seed is None and len({c.train.seed for c in group}) > 1:
            logging.getLogger(__name__).warning(
                "%s differ only in train.seed, so they share one ingest, split with %s's train.seed %d "
                "(deprecated); set data.seed for one split per seed",
                ", ".join(c.name for c in group), group[0].name, group[0].train.seed)
    return list(groups.values())


def shared_data_config(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first config, after checking every config has the same `data` section (one ingest).

    Raises:
        ConfigError: naming the first data field that differs and the two experiments.
    """
    if not configs:
        raise ConfigError("a sweep needs at least one experiment config")
    parsed = [config_to_params(config_from_dict(c)) for c in configs]
    first = parsed[0]
    for other in parsed[1:]:
        for key in sorted(set(first["data"]) | set(other["data"])):
            value = first["data"].get(key)
            if other["data"].get(key) != value:  # null fields are dropped in both: compare by .get
                raise ConfigError(
                    f"data.{key} differs between {first['name']} ({value!r}) and {other['name']} "
                    f"({other['data'].get(key)!r}): one sweep pipeline ingests once; "
                    "`longtail sweep` splits such configs into one pipeline per data setting")
    return first
