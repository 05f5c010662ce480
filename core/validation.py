"""Checks shared by the apps' inputs, and turning pydantic validation errors into one line a
person can act on."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Union

from pydantic import AfterValidator, AwareDatetime, Discriminator, Tag, ValidationError

# Clocks drift and time zones get mislabelled by hours; more than a day ahead is a mistake.
FUTURE_TOLERANCE = dt.timedelta(days=1)


def not_in_the_future(value: dt.datetime) -> dt.datetime:
    """Refuse a time more than `FUTURE_TOLERANCE` ahead of this server's clock: a future event
    would stay the newest (and, decayed by age, the heaviest) for as long as it is stored."""
    latest = dt.datetime.now(dt.UTC) + FUTURE_TOLERANCE
    if value > latest:
        raise ValueError(
            f"{value.isoformat()} is more than a day ahead of this server's clock "
            f"({latest - FUTURE_TOLERANCE:%Y-%m-%dT%H:%M:%SZ}); check its time zone"
        )
    return value


# The earliest time a stored event may carry. Older ones are mistakes (a time stamp read in the
# wrong unit), and windows reaching back days from year 1 overflow Python's dates.
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def not_before_1970(value: dt.datetime) -> dt.datetime:
    """Refuse an aware time before `EARLIEST` (1970-01-01T00:00:00Z)."""
    if value < EARLIEST:
        raise ValueError(f"{value.isoformat()} is before 1970-01-01T00:00:00Z; check the value")
    return value


PastDatetime = Annotated[
    AwareDatetime, AfterValidator(not_before_1970), AfterValidator(not_in_the_future)
]


def _printable(value: object) -> object:
    """A value as JSON can carry it: text with lone surrogates escaped, odd numbers as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return _printable(str(value))


def error_details(errors: Iterable[Any], prefix: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Pydantic errors as a 422's `detail`: place, message, kind and limits, never the input
    (it can be large, or hold what JSON cannot carry: a lone surrogate, NaN)."""
    return [
        {
            "type": error["type"],
            "loc": [_printable(part) for part in _without_tags((*prefix, *error["loc"]))],
            "msg": _printable(error["msg"]),
            **(
                {"ctx": {k: _printable(v) for k, v in error["ctx"].items()}}
                if error.get("ctx")
                else {}
            ),
        }
        for error in errors
    ]


# The tags `one_or_batch` gives its union's members: pydantic puts them in an error's place
# (`body.one.title`), where the client sent no such field.
_UNION_TAGS = frozenset({"one", "batch"})


def _without_tags(loc: Sequence[Any]) -> list[Any]:
    return [
        part
        for i, part in enumerate(loc)
        if not (part in _UNION_TAGS and i > 0 and loc[i - 1] == "body")
    ]


def problems(exc: ValidationError, whole: str | None = "value") -> str:
    """`field.path: message; other: message` (`whole` names an error about the whole value;
    None: such an error is its message alone, where the caller names the value already)."""
    said = []
    for error in exc.errors():
        place = ".".join(str(part) for part in error["loc"]) or whole
        message = str(error["msg"]).removeprefix("Value error, ")  # pydantic's, for ValueError
        said.append(f"{place}: {message}" if place else message)
    return "; ".join(said)


def one_or_batch(one: type, batch: type, key: str) -> Any:
    """A request body that is one object or `{key: [...]}`. Validated as whichever it looks
    like, so a bad article is told what is wrong with it, not also that it lacks `articles`."""

    def kind(value: Any) -> str:
        return "batch" if isinstance(value, dict) and key in value else "one"

    return Annotated[
        Union[Annotated[one, Tag("one")], Annotated[batch, Tag("batch")]],  # noqa: UP007
        Discriminator(kind),
    ]
