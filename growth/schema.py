"""Reading a config section: each key's value decoded into its dataclass field type by pydantic.

``pydantic.TypeAdapter(<field type>)`` decodes a value (nested dataclasses such as ``train.growth``'s
stages included) in strict mode: no silent conversions ('4' is not 4, true is not 1.0), NaN and inf
are not numbers, a mapping may hold only the dataclass's keys. Values go through pydantic's JSON mode,
where strict mode still reads a mapping as a dataclass. Its first error becomes one line naming the key,
e.g. ``model.d_model expects int, got 'abc' (from command line)``.

A ``key=value`` override from the command line is text, read with YAML's scalar rules (``parse_scalar``);
``from_text`` then also lets a whole-number float stand for an int (``1e6``) and a scalar for a string.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from typing import Any

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from growth.errors import ConfigError

INT_LIMIT = 2**63 - 1  # int64: torch and numpy hold counters and seeds in it
STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def set_key(section_obj: Any, section: str, name: str, value: Any, source: str, from_text: bool) -> None:
    """``section_obj.name = value`` after checking the key exists and the value has the field's type."""
    known = [f.name for f in dataclasses.fields(section_obj)]
    if name not in known:
        raise ConfigError(
            f"unknown key {section + '.' + name!r}{_did_you_mean(f'{section}.{name}', section, known)}"
        )
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


def coerce(key: str, value: Any, expected: Any, source: str, from_text: bool) -> Any:
    """``value`` as an ``expected`` (a field's type), or a one-line ConfigError naming ``key``."""
    if from_text:
        value = _text_rules(value, expected)
    if expected is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    try:
        decoded = _adapter(expected).validate_json(json.dumps(value))
    except (TypeError, ValueError) as err:  # TypeError: not JSON (a YAML date); ValueError: pydantic's
        raise _error(key, value, expected, source, err) from None
    if isinstance(decoded, int) and not isinstance(decoded, bool) and not -INT_LIMIT <= decoded <= INT_LIMIT:
        raise ConfigError(
            f"{key}={value!r} is out of range: integer keys hold at most {INT_LIMIT:,} (2**63 - 1, "
            f"int64) (from {source})"
        )
    return decoded


@functools.cache
def _adapter(expected: Any) -> TypeAdapter:
    return TypeAdapter(expected, config=STRICT)


def _text_rules(value: Any, expected: Any) -> Any:
    """Command-line text: ``1e6`` (a float) may be an int, ``123`` or ``true`` may be a string, also as
    the items of a list (``train.sample_prompts=[1, 2]``)."""
    if typing.get_origin(expected) is list and isinstance(value, list):
        return [_text_rules(item, typing.get_args(expected)[0]) for item in value]
    union = typing.get_origin(expected) in (typing.Union, types.UnionType)
    options = typing.get_args(expected) if union else (expected,)
    if int in options and isinstance(value, float) and value.is_integer():
        return int(value)
    scalar = isinstance(value, (bool, int, float))
    if str in options and scalar and not any(_is_exactly(value, o) for o in options if o is not str):
        return str(value)
    return value


def _is_exactly(value: Any, kind: Any) -> bool:
    """``isinstance`` where a bool is no int (strict mode's view)."""
    return isinstance(kind, type) and isinstance(value, kind) and (kind is bool) == isinstance(value, bool)


def _error(key: str, value: Any, expected: Any, source: str, err: Exception) -> ConfigError:
    """pydantic's first error as one line; its location (``(0, 'at_step')``) extends the key."""
    if not isinstance(err, ValidationError):
        return ConfigError(f"{key} expects {_type_name(expected)}, got {value!r} (from {source})")
    first = err.errors()[0]
    path, kind, known = key, expected, []
    for part in first["loc"]:
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            break  # a union names all its options, not the one tried last
        if dataclasses.is_dataclass(kind):
            known = [f.name for f in dataclasses.fields(kind)]
        if isinstance(part, int):
            path, kind = f"{path}[{part}]", typing.get_args(kind)[0]
        else:
            parent = kind
            hints = typing.get_type_hints(kind) if dataclasses.is_dataclass(kind) else {}
            path, kind = (
                f"{path}.{part}",
                hints.get(part, typing.get_args(parent)[-1] if typing.get_args(parent) else Any),
            )
    got = first.get("input", value)
    if first["type"] == "unexpected_keyword_argument":
        parent = path.rsplit(".", 1)[0]
        return ConfigError(f"unknown key {path}{_did_you_mean(path, parent, known, listing=True)}")
    if first["type"] == "missing":
        return ConfigError(f"{path} is required (from {source})")
    if first["type"] == "finite_number":
        return ConfigError(f"{path} must be a finite number, got {got!r} (from {source})")
    if first["type"] == "dataclass_type":
        return ConfigError(
            f"{path} must be a mapping with keys {', '.join(f.name for f in dataclasses.fields(kind))}, "
            f"got {got!r} (from {source})"
        )
    return ConfigError(f"{path} expects {_type_name(kind)}, got {got!r} (from {source})")


def _did_you_mean(dotted: str, parent: str, known: list[str], listing: bool = False) -> str:
    hint = difflib.get_close_matches(dotted, [f"{parent}.{k}" for k in known], n=1)
    if hint:
        return f"; did you mean {hint[0]}?"
    return f"; known keys are {', '.join(known)}" if listing else ""


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(kind, "__name__", None) or str(kind)
