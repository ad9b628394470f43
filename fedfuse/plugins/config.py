"""Build a config dataclass from a mapping, with errors that name the key and where it came from."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """Bad user input (suite file, --set, config key). The message is meant for the user."""


def require_positive(config, *names: str) -> None:
    """For a config's ``__post_init__``: each named field must be >= 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"'{name}' must be >= 1, got {getattr(config, name)}")


def added_later(default: Any) -> Any:
    """A config field added after results were stored: at its default it is left out of the
    cell's identity, so those results keep their cell ids (the protocol behaves as before)."""
    return dataclasses.field(default=default, metadata={"added_later": True})


def identity(config: Any) -> dict[str, Any]:
    """A config as a cell records it: every field, but those ``added_later`` at their default."""
    values = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("added_later") and values[f.name] == f.default:
            del values[f.name]
    return values


def describe_fields(cls: type) -> str:
    return ", ".join(f"{f.name} ({type_name(f.type)})" for f in dataclasses.fields(cls))


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def build_config(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` after checking every key and type; ``where`` locates the values."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    checked = {}
    for key, value in values.items():
        if key not in names:
            guess = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise ConfigError(f"{where}: unknown key '{key}'{hint}; allowed keys: {describe_fields(cls)}")
        checked[key] = coerce(value, hints[key], f"{where}: key '{key}'")
    try:
        return cls(**checked)
    except (TypeError, ValueError) as err:  # __post_init__ checks of the dataclass itself
        raise ConfigError(f"{where}: {err}") from None


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; widen int to float, list to tuple."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} is {value!r}; allowed values: {type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, where)
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, args, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _coerce_union(value: Any, args: tuple, where: str) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where} must be one of {', '.join(type_name(a) for a in args)}, got {value!r}")


def _coerce_sequence(value: Any, origin: type, args: tuple, where: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
    item = args[0] if args else typing.Any
    items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    return origin(items)


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str
    default: Any
    help: str


def field_docs(cls: type) -> list[FieldDoc]:
    """Each settable field of a config dataclass: type, default, and its help, which is the
    comment at the end of the field's line (in the class or the base that declares it)."""
    hints, comments = typing.get_type_hints(cls), {}
    for klass in reversed(cls.__mro__):
        comments.update(_field_comments(klass))
    return [FieldDoc(f.name, type_name(hints[f.name]), _default(f), comments.get(f.name, ""))
            for f in dataclasses.fields(cls) if f.init]


def _default(f) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"


def _field_comments(klass: type) -> dict[str, str]:
    import inspect
    import re

    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):  # a builtin, or a class made at run time
        return {}
    found = re.findall(r"^\s+(\w+)\s*:[^#\n]*?#\s*(.+)$", source, re.M)
    return {name: text.strip() for name, text in found}
