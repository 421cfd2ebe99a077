"""Bad user input: the one exception family and the checks that raise it (the lowest layer of cfgutils).

The command line turns :class:`UserInputError` into a one-line ``error: ...`` and exit code 2. Every
module validates its input with the helpers below, so the same mistake reads the same everywhere.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any


class UserInputError(ValueError):
    """Bad input from a user (a flag, a file, a checkpoint): reported in one line, nothing written."""


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum`` (not a bool), else a :class:`UserInputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise UserInputError(f"{name} must be {kind}, got {value!r}")
    return value


def finite_number(value: Any, name: str, low: float = -math.inf, high: float = math.inf,
                  allow_inf: bool = False) -> float:
    """``value`` as a float if it is a number in [low, high] (finite unless ``allow_inf``), else an error."""
    if isinstance(value, bool):
        raise UserInputError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"{name} must be a number, got {value!r}") from error
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise UserInputError(f"{name} must be a finite number, got {value!r}")
    if not low <= number <= high:
        raise UserInputError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return number


def one_of(value: Any, choices, name: str) -> Any:
    """``value`` if it is one of ``choices``, else an error that lists them."""
    if value not in choices:
        raise UserInputError(f"unknown {name} {value!r}: use one of {', '.join(map(str, choices))}")
    return value


def config_from_dict(cls, values: dict | None, section: str):
    """Build the config dataclass ``cls`` from a plain dict (YAML, a checkpoint, ``--opts``).

    Unknown keys are refused; strings and numbers are coerced to the field's type ("3e-4" -> 3e-4,
    a list -> a tuple); the result's ``validate()`` runs when the class has one.
    """
    values = dict(values or {})
    defaults = {item.name: item.default for item in fields(cls)}
    unknown = set(values) - set(defaults)
    if unknown:
        raise UserInputError(f"unknown {section} config keys: {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(defaults))})")
    for key, value in values.items():
        values[key] = _coerce(value, type(defaults[key]), f"{section}.{key}")
    try:
        config = cls(**values)
    except TypeError as error:
        raise UserInputError(f"{section} config: {error}") from error
    if hasattr(config, "validate"):
        config.validate()
    return config


def _coerce(value: Any, kind: type, name: str) -> Any:
    try:
        if kind is float and isinstance(value, (str, int)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, str):
            return int(value)
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if kind is tuple and isinstance(value, (list, tuple)):
            return tuple(int(v) if isinstance(v, (int, float)) and float(v).is_integer() else v for v in value)
    except ValueError as error:
        raise UserInputError(f"{name}: expected a {kind.__name__}, got {value!r}") from error
    return value
