"""Raw settings (YAML mappings, after overrides) into typed sections: each value checked against its
field's annotation, an unknown key or a wrong type refused with one line naming the dotted key."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from recspark.core.config.checks import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Section = TypeVar("_Section", bound="DataclassInstance")


def build_section(cls: type[_Section], raw: Any, where: str) -> _Section:
    """``cls`` built from the mapping ``raw`` found at dotted key ``where`` (``""``: the root)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config section {where or '<root>'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix + str(unknown[0])!r}")
    values = {
        name: _coerce(hints[name], raw[name], f"{where}.{name}" if where else name)
        for name in names
        if name in raw
    }
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build_section(hint, value if value is not None else {}, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, bool):  # YAML reads `true` as a boolean; Spark settings want text
            return str(value).lower()
        if isinstance(value, str | int | float):
            return str(value)
        if isinstance(value, datetime):  # YAML reads an unquoted ISO time as a timestamp
            return value.isoformat()
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value
