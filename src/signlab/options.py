"""One declaration per option: its flag, help, type and allowed range live on the config field itself.

    batch_size: int = option(128, "--batch-size", "images per step, over all processes", at_least(1))

The CLI builds its flags from these declarations (argparse checks each value as it parses it) and
`validate` checks a whole config with the same rules, so a preset or a saved config.json is held to the
flags' ranges too. A complaint is one line that names the flag and the value: `--batch-size 0: must be at
least 1`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any

from signlab.errors import UserError

Check = Callable[[Any], "str | None"]  # returns a complaint, or None when the value is fine


@dataclass(frozen=True)
class Option:
    flag: str | None  # None: a config field without a flag, still checked by `validate`
    help: str
    check: Check | None = None
    parse: Callable[[str], Any] | None = None  # argparse type; default: the type of the field's default
    negatable: bool = False  # a switch that a preset may turn on: --flag and --no-flag


def option(default: Any = MISSING, flag: str | None = None, help: str = "", check: Check | None = None,
           parse: Callable[[str], Any] | None = None, default_factory: Any = MISSING, negatable: bool = False) -> Any:
    """A dataclass field that carries its Option."""
    meta = {"option": Option(flag, help, check, parse, negatable)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- checks


def at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be at least {low}"


def above(low: float) -> Check:
    return lambda v: None if v > low else f"must be greater than {low}"


def between(low: float, high: float, high_open: bool = False) -> Check:
    """low ≤ v ≤ high (v < high with high_open); the complaint names the interval."""
    text = f"must be in [{low}, {high}{')' if high_open else ']'}"
    return lambda v: None if low <= v and (v < high if high_open else v <= high) else text


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"use one of {', '.join(choices)}"


def each(check: Check) -> Check:
    """A check for every item of a list value (a single value is a list of one)."""
    return lambda values: next((c for c in map(check, values if isinstance(values, list | tuple) else [values])
                                if c), None)


def int_list(text: str) -> list[int]:
    """Comma-separated counts: "16,32,64"."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 16,32,64") from None


def size_pair(text: str) -> tuple[int, int]:
    """An image size "WIDTHxHEIGHT": "1360x800" -> (1360, 800)."""
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use WIDTHxHEIGHT, e.g. 1360x800")
    return int(w), int(h)


# ---------------------------------------------------------------- use


def declared(cls) -> list[tuple[Field, Option]]:
    """The fields of a dataclass that carry an Option, in declaration order."""
    return [(f, f.metadata["option"]) for f in fields(cls) if "option" in f.metadata]


def argparse_type(opt: Option, base: Callable[[str], Any]) -> Callable[[str], Any]:
    """Parse a flag's text with `base` (or the option's own parser), then apply the option's check."""
    parse = opt.parse or base

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {getattr(base, '__name__', 'value')}") from None
        complaint = opt.check(value) if opt.check else None
        if complaint:
            raise argparse.ArgumentTypeError(f"{text}: {complaint}")
        return value

    convert.__name__ = getattr(base, "__name__", "value")  # argparse names the type in its messages
    return convert


def type_complaint(f: Field, value: Any) -> str | None:
    """A JSON preset can hold "8" where 8 belongs: say so instead of failing inside a comparison."""
    expected = type(f.default) if f.default is not MISSING and f.default is not None else None
    if expected is bool and not isinstance(value, bool):
        return "must be true or false"
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "must be an integer"
    if expected is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        return "must be a number"
    if expected is str and not isinstance(value, str):
        return "must be a string"
    return None


def validate(obj: Any, where: str = "") -> None:
    """Check every declared field of a config (recursing into nested config dataclasses); UserError on the first
    bad value, naming the flag (or the config field when it has none) and `where` the value came from."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            validate(value, where)
            continue
        opt = f.metadata.get("option")
        if opt is None or value is None:
            continue
        complaint = type_complaint(f, value) or (opt.check(value) if opt.check else None)
        if complaint:
            name = opt.flag or f"{type(obj).__name__}.{f.name}"
            raise UserError(f"{name} {value}: {complaint}{where}")
