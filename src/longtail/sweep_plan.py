"""Sweep plans: a base config times a grid, or a sweep file listing experiments, grouped by data settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from longtail.config import ExperimentConfig, config_from_dict, config_to_dict, load_config
from longtail.config_overrides import apply_overrides
from longtail.errors import ConfigError
from longtail.knobs import config_to_params
from longtail.search_space import SearchSpace, config_at, grid_space, parse_search, yaml_flow
from longtail.yaml_loader import read_yaml_file


def expand_grid(base: dict[str, Any], grid: list[str]) -> list[ExperimentConfig]:
    """Every combination of the grid's values applied to `base`; each named after its values.

    `--grid KEY=V1,V2` is shorthand for the search space `KEY: {choice: [V1, V2]}` (longtail.search_space).
    """
    return grid_configs(base, grid_space(grid, base))


def grid_configs(base: dict[str, Any], space: SearchSpace) -> list[ExperimentConfig]:
    """One config per point of a choice-only space, named base name + `-field=value` per dimension."""
    base_name = base.get("name", "experiment")
    return [config_at(base, point, base_name + "".join(f"-{key.split('.')[-1]}={yaml_flow(v)}"
                                                        for key, v in point.items()))
            for point in space.grid_points()]


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
        if isinstance(raw, dict) and "search" in raw:  # a grid written as a search block of choices
            plan = load_search(path, overrides)
            configs += grid_configs({**plan.base, "name": plan.name}, plan.space)
        elif isinstance(raw, dict) and "experiments" in raw:
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


@dataclass(frozen=True)
class SearchPlan:
    """A search file read: its name, the raw base config the points go into, and the space."""

    name: str
    base: dict[str, Any]
    space: SearchSpace
    path: Path


def load_search(path: str | Path, overrides: list[str] | None = None, grid: list[str] | None = None) -> SearchPlan:
    """A search file: `base:` (an experiment YAML, relative to the file), optional `set:` and `search:`;
    or an experiment YAML with a `search:` block at its top level. `grid` axes join the space as choices.

    Raises:
        ConfigError: no such file, unknown fields, an invalid base, or a space the config refuses
            (longtail.search_space.parse_search); or nothing to search.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search file not found: {path}")
    raw = read_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"search file {path} must hold a mapping at the top level")
    raw = dict(raw)
    block = raw.pop("search", None)
    if "base" in raw or "set" in raw or "experiments" in raw:
        if "experiments" in raw:
            raise ConfigError(f"{path}: a search file has base, set and search; an experiments: list is "
                              "a sweep file for `longtail sweep`")
        _known_fields(path, raw)
        base_cfg = load_config(path.parent / raw["base"], overrides) if raw.get("base") else config_from_dict({})
        try:
            base_raw = apply_overrides(config_to_dict(base_cfg), _set_overrides(raw.get("set")))
            config_from_dict(base_raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: set: {e}") from None
    else:
        raw.setdefault("name", path.stem)
        base_raw = config_to_dict(config_from_dict(apply_overrides(raw, overrides or [])))
    name = str(raw.get("name") or path.stem)
    base_raw["name"] = name
    dims = parse_search(block, base_raw, where=f"{path}: search").dimensions if block is not None else ()
    if grid:
        dims += grid_space(grid, base_raw).dimensions
    if not dims:
        raise ConfigError(f'{path}: nothing to search: add a search: block (README "Search") or --grid')
    keys = [d.key for d in dims]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"{path}: searched twice (search: and --grid): {', '.join(twice)}")
    return SearchPlan(name, base_raw, SearchSpace(dims), path)


def _known_fields(path: Path, raw: dict[str, Any]) -> None:
    unknown = set(raw) - {"base", "set", "experiments", "search", "name"}
    if unknown:
        raise ConfigError(f"{path}: unknown sweep field(s) {', '.join(sorted(unknown))}; "
                          "known: base, set, experiments, search")


def _set_overrides(block: Any) -> list[str]:
    return [f"{k}={yaml_flow(v)}" for k, v in (block or {}).items()]


def _sweep_file(path: Path, raw: dict[str, Any], overrides: list[str]) -> list[ExperimentConfig]:
    _known_fields(path, raw)
    base = load_config(path.parent / raw["base"], overrides) if raw.get("base") else config_from_dict({})
    common = _set_overrides(raw.get("set"))
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
