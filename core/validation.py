"""Checks shared by the apps' inputs, and turning pydantic validation errors into one line a
person can act on."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
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


# How deep a request's JSON may nest. Free-form fields (metadata, attributes, job parameters)
# are stored as given and sent back in answers, whose serializer stops at about 255 levels.
MAX_JSON_DEPTH = 32


class UnfitJson(ValueError):
    """Valid JSON the apps could store but not send back (`strict_json_loads`)."""


def _refuse_constant(name: str) -> Any:
    raise UnfitJson(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnfitJson(f"the number {text[:40]} is out of range")
    return value


def json_problem(value: Any) -> str | None:
    """What makes decoded JSON unfit to store and send back, if anything: nesting deeper than
    `MAX_JSON_DEPTH`, or text holding a lone surrogate (`\\ud800`), which no UTF-8 can carry."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "text holds a lone surrogate (\\ud800-\\udfff), which is not a character"
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack += [(child, depth + 1) for child in children]
    return None


def strict_json_loads(data: str | bytes) -> Any:
    """JSON as the apps can store and send back. `UnfitJson` for NaN and Infinity, numbers
    beyond a float's range (`1e309`), lone surrogates and nesting deeper than
    `MAX_JSON_DEPTH`; `ValueError` saying where for broken syntax, text that is not UTF-8,
    and numbers longer than Python reads (4,300 digits)."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise UnfitJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column" if exc.lineno > 1 else "column"
        raise ValueError(f"{exc.msg} at {where} {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except UnfitJson:
        raise
    except ValueError as exc:
        if "digits" not in str(exc):
            raise
        raise ValueError(
            f"a number is longer than {sys.get_int_max_str_digits():,} digits"
        ) from None
    problem = json_problem(value)
    if problem is not None:
        raise UnfitJson(problem)
    return value
