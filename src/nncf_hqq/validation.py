"""Checks of user-facing parameter fields, each raising `nncf.ValidationError` naming the field and its range."""

import math
import numbers
from collections.abc import Callable
from enum import Enum

import nncf


def check_integer(field: str, value, minimum: int = 0, allow_none: bool = False) -> None:
    """`value` is an integer >= `minimum` (or None with `allow_none`); `field` is "Class.name"."""
    if value is None and allow_none:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        requirement = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        requirement = "a positive integer" if minimum == 1 else requirement
        raise nncf.ValidationError(f"{field} must be {requirement}, got {value!r}.")


def check_real(field: str, value, requirement: str, predicate: Callable[[float], bool]) -> None:
    """`value` is a finite real number for which `predicate` holds, described by `requirement`."""
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or not predicate(float(value)):
        raise nncf.ValidationError(f"{field} must be {requirement}, got {value!r}.")


def check_bool(field: str, value) -> None:
    if not isinstance(value, bool):
        raise nncf.ValidationError(f"{field} must be True or False, got {value!r}.")


def check_enum(field: str, value, enum: type[Enum]) -> None:
    if not isinstance(value, enum):
        raise nncf.ValidationError(f"{field} must be one of {[e.value for e in enum]}, got {value!r}.")


def enum_from_string(value, enum: type[Enum]):
    """The member of `enum` whose value is the string `value`; anything else as given (for `check_enum`)."""
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            return value
    return value
