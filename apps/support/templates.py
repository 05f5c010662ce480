"""Answer templates: text with slots, `{customer_name}` or with a default, `{order_id|your order}`.

Slot names are lower-case identifiers; `{{` and `}}` are literal braces. A slot with no value
and no default cannot be filled: `render` reports it, and the bot hands the conversation to a
person rather than send a broken answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_SLOT = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(?:\|(.*))?$", re.DOTALL)


class TemplateError(ValueError):
    """The template cannot be parsed; the message says where."""


@dataclass(frozen=True)
class Slot:
    name: str
    default: str | None


@dataclass(frozen=True)
class Rendered:
    text: str
    missing: tuple[str, ...]  # slots with neither a value nor a default


def parse_template(template: str) -> list[str | Slot]:
    """Literal text and slots, in order; raises `TemplateError` naming the bad position."""
    parts: list[str | Slot] = []
    position = 0
    for match in _TOKEN.finditer(template):
        if match.start() > position:
            parts.append(template[position : match.start()])
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif token in ("{", "}"):
            raise TemplateError(
                f"unmatched {token!r} at character {match.start() + 1}; "
                "write {{ or }} for a literal brace"
            )
        else:
            slot = _SLOT.match(match.group(1))
            if slot is None:
                raise TemplateError(
                    f"bad slot {token!r} at character {match.start() + 1}: expected {{name}} or "
                    "{name|default} with a lower-case name"
                )
            parts.append(Slot(slot.group(1), slot.group(2)))
        position = match.end()
    if position < len(template):
        parts.append(template[position:])
    return parts


def slot_names(template: str) -> list[str]:
    return [part.name for part in parse_template(template) if isinstance(part, Slot)]


def render(template: str, values: Mapping[str, object]) -> Rendered:
    """Fill the slots from `values`; empty values count as missing."""
    out: list[str] = []
    missing: list[str] = []
    for part in parse_template(template):
        if isinstance(part, str):
            out.append(part)
            continue
        value = values.get(part.name)
        if value is None or str(value).strip() == "":
            if part.default is None:
                missing.append(part.name)
                out.append("{" + part.name + "}")
                continue
            value = part.default
        out.append(str(value))
    return Rendered("".join(out), tuple(missing))
