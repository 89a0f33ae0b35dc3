"""A raw config mapping checked against the config dataclasses' annotations and built into them.

The mapping is parsed YAML or a KFP dict parameter; only lossless conversions are made (int -> float),
and each error is one line naming the field. The schema itself (fields, defaults, bounds) is config.py's.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from longtail.errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str, renamed: Mapping[str, str]) -> Any:
    """Check `value` against the annotation `tp`, converting only lossless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where, renamed)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"config field {where} must be {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config field {where} must be null, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"config field {where} must be one of {', '.join(map(str, allowed))}, got {value!r}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config field {where} must be a mapping, got {value!r}")
        return build_dataclass(tp, value, renamed, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config field {where} must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]", renamed) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field {where} must be a mapping, got {value!r}")
        _refuse_non_finite(value, where)
        return {k: _integral_floats_to_int(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config field {where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # KFP passes dict parameters as protobuf Structs, where every number is a double.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config field {where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"config field {where} must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"config field {where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config field {where} must be a string, got {value!r}")
    return value


def _integral_floats_to_int(value: Any) -> Any:
    """3.0 -> 3 inside free-form mappings (model.args): a KFP dict parameter travels as a protobuf
    Struct, where every number is a double, and Keras refuses float layer sizes."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral_floats_to_int(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral_floats_to_int(v) for k, v in value.items()}
    return value


def _refuse_non_finite(value: Any, where: str) -> None:
    """Free-form values (model.args) hold no .inf or .nan either."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config field {where} must be a finite number, got {value!r}")
    if isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_non_finite(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_non_finite(v, f"{where}.{k}")


def refuse_shared(value: Any, where: str, seen: set[int]) -> None:
    """Refuse a mapping whose tree reaches one list or dict twice: what YAML aliases make (from a
    loader other than load_yaml's), and what turns a walk over a few hundred bytes into gigabytes."""
    if not isinstance(value, dict | list) or not value:  # a shared empty container costs nothing
        return
    if id(value) in seen:
        raise ConfigError(f"config field {where} repeats a shared value (a YAML alias?); write each value out in full")
    seen.add(id(value))
    if isinstance(value, list):
        for i, v in enumerate(value):
            refuse_shared(v, f"{where}[{i}]", seen)
    else:
        for k, v in value.items():
            refuse_shared(v, f"{where}.{k}" if where else str(k), seen)


def build_dataclass(cls: type, raw: dict[str, Any], renamed: Mapping[str, str], prefix: str = "") -> Any:
    """`cls` built from `raw`, each value checked against its field's annotation, nested sections too.

    Args:
        renamed: old dotted key -> the new spelling, for the one-line error an old key gets.

    Raises:
        ConfigError: naming the first unknown, renamed or mistyped field.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if where in renamed:
            raise ConfigError(f"config field {where} is gone: {renamed[where]}")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else ""
            raise ConfigError(f"unknown config field {where}{hint} (known: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], where, renamed)
    return cls(**kwargs)
