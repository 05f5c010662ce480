"""Turning pydantic validation errors into one line a person can act on."""

from __future__ import annotations

from pydantic import ValidationError


def problems(exc: ValidationError, whole: str = "value") -> str:
    """`field.path: message; other: message` (`whole` names an error about the whole value)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or whole}: {error['msg']}"
        for error in exc.errors()
    )
