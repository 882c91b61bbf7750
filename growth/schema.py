"""Reading a config section: each key's value checked against its dataclass field type, one-line errors.

A value from YAML keeps its YAML type; a ``key=value`` override from the command line is text, read with
YAML's scalar rules (``parse_scalar``), so ``from_text`` also lets a whole-number float stand for an int
and any scalar stand for a string. Errors are :class:`ConfigError` naming the key, e.g.
``model.d_model expects int, got 'abc' (from command line)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any

import yaml

from growth.errors import ConfigError


def set_key(section_obj: Any, section: str, name: str, value: Any, source: str, from_text: bool) -> None:
    """``section_obj.name = value`` after checking the key exists and the value has the field's type."""
    known = [f.name for f in dataclasses.fields(section_obj)]
    if name not in known:
        hint = difflib.get_close_matches(f"{section}.{name}", [f"{section}.{k}" for k in known], n=1)
        suggestion = f"; did you mean {hint[0]}?" if hint else ""
        raise ConfigError(f"unknown key {section + '.' + name!r}{suggestion}")
    expected = typing.get_type_hints(type(section_obj))[name]
    setattr(section_obj, name, coerce(f"{section}.{name}", value, expected, source, from_text))


def require_positive(section: str, obj: Any, *names: str) -> None:
    """``<section>.<name> must be > 0`` for the first of ``names`` that is not."""
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {getattr(obj, name)}")


def parse_scalar(text: str) -> Any:
    # YAML's scalar rules (1e-3 -> float needs a dot or sign in YAML 1.1, so try numbers first).
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


INT_LIMIT = 2**63 - 1  # int64: torch and numpy hold counters and seeds in it


def coerce(key: str, value: Any, expected: type, source: str, from_text: bool) -> Any:
    def fail() -> ConfigError:
        return ConfigError(f"{key} expects {_type_name(expected)}, got {value!r} (from {source})")

    if expected is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if expected is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer() and from_text)
        ):
            raise fail()
        if not -INT_LIMIT <= value <= INT_LIMIT:  # what every step counter and seed is stored in
            raise ConfigError(
                f"{key}={value!r} is out of range: integer keys hold at most {INT_LIMIT:,} (2**63 - 1, "
                f"int64) (from {source})"
            )
        return int(value)
    if expected is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                raise fail() from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise fail()
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r} (from {source})")
        return float(number)
    if expected is str:
        if isinstance(value, str):
            return value
        if from_text and value is not None and not isinstance(value, (dict, list)):
            return str(value)
        raise fail()
    return _coerce_structured(key, value, expected, source, from_text)


def _coerce_structured(key: str, value: Any, expected: Any, source: str, from_text: bool) -> Any:
    """Lists, mappings, unions and nested dataclasses (e.g. ``train.growth``: a list of stages);
    an element's errors name it as ``key[i].field``."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return coerce(key, value, option, source, from_text)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{key} expects {names}, got {value!r} (from {source})")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} expects a list, got {value!r} (from {source})")
        return [coerce(f"{key}[{i}]", item, args[0], source, from_text) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping, got {value!r} (from {source})")
        return {str(k): coerce(f"{key}.{k}", v, args[1], source, from_text) for k, v in value.items()}
    if dataclasses.is_dataclass(expected):
        return _coerce_dataclass(key, value, expected, source, from_text)
    raise TypeError(f"unsupported config field type {expected} for {key}")


def _coerce_dataclass(key: str, value: Any, expected: type, source: str, from_text: bool) -> Any:
    known = [f.name for f in dataclasses.fields(expected)]
    if isinstance(value, expected):
        return value
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key} must be a mapping with keys {', '.join(known)}, got {value!r} (from {source})"
        )
    for name in value:
        if name not in known:
            hint = difflib.get_close_matches(str(name), known, n=1)
            raise ConfigError(
                f"unknown key {key}.{name}"
                + (f"; did you mean {key}.{hint[0]}?" if hint else f"; known keys are {', '.join(known)}")
            )
    hints = typing.get_type_hints(expected)
    required = [
        f.name
        for f in dataclasses.fields(expected)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in value]
    if missing:
        raise ConfigError(f"{key}.{missing[0]} is required (from {source})")
    return expected(
        **{name: coerce(f"{key}.{name}", v, hints[name], source, from_text) for name, v in value.items()}
    )


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind)
