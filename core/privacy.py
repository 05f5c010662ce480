"""Mask personal data (emails, phone numbers, payment cards, IBANs) before text is stored or logged.

Rules, in the order they are applied (each pass sees the output of the one before, which is what
makes masking idempotent and keeps an IBAN's digits from being read as a card or a phone):

1. **Email** -> `[EMAIL]`: `local@domain.tld`, the local part of word characters and `.%+-` (an
   apostrophe only inside it), domain labels and an alphabetic top-level domain of 2+ letters.
2. **IBAN** -> `[IBAN]`: two letters of a country in the ISO 13616 registry, two check digits and
   the BBAN, single spaces allowed anywhere, upper or lower case (not mixed). Masked only when the
   length is exactly the country's and the mod-97 check gives 1.
3. **Card** -> `[CARD]`: 13-19 digits, written unbroken or in groups of 3+ digits separated by a
   single space or dash, starting with 2-6 (the ISO/IEC 7812 industry digits of payment cards) and
   Luhn-valid. Inside a longer run of groups ("4111 1111 1111 1111 12/26") the Luhn-valid stretch
   is found and masked on its own.
4. **Phone** -> `[PHONE]`: a number written with digits, single spaces, dots or dashes and
   bracketed groups ("(415)", "(0)"), not glued to a word, price, URL or decimal, that is one of:

   - international: a leading `+` and 8-15 digits (E.164), a `(0)` trunk marker not counted;
     or a leading `00` + country code and 10-17 digits;
   - national with a trunk prefix: starts with `0` then 1-9 and has 10-12 digits, unbroken or not
     (UK "020 7946 0958", "07700900123", FR "06 12 34 56 78", DE "030 12345678");
   - North American shape: 3-3-4 digits in groups, optionally `1` first, area code 2-9
     ("(415) 555-2671", "415.555.2671", "1-800-555-0199");
   - any other 7-15 digit number without dots, only when a phone word ("call", "phone", "mobile",
     "WhatsApp", "tel", ...) comes shortly before it on the same line ("call me on 612 34 56 78").

   Never a phone: dates (Y-M-D, D-M-Y with valid month and day), decimals ("0.97412345678":
   two groups and one dot), and, unless it starts with `+`,
   a number right after an id word ("order", "invoice", "tracking", "ref", "ticket", ...) or the
   rest of a mistyped IBAN ("NL92 ABNA 0417 1643 00" with a wrong check digit; cards too).
   A plain digit run such as "4155552671" or "12345678" with no phone word before it is not
   masked: it is as likely to be an order, tracking or account number.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class PersonalDataKind(StrEnum):
    """A kind of personal data this module masks; `placeholder` is what replaces it."""

    EMAIL = "email"
    IBAN = "iban"
    CARD = "card"
    PHONE = "phone"

    @property
    def placeholder(self) -> str:
        return f"[{self.name}]"


@dataclass(frozen=True)
class MaskResult:
    """Masked text and how many items of each kind were replaced (kinds not found are absent)."""

    text: str
    counts: dict[PersonalDataKind, int] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.counts)


# --- patterns --------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])"  # start at the beginning of the address, not inside a longer token
    r"[\w.%+-]+(?:'[\w.%+-]+)*@"  # an apostrophe only inside: o'neill@, not 'quoted@...'
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"
    r"[^\W\d_]{2,63}"
    r"(?![\w-])"
)

# Lengths from the SWIFT IBAN registry; a country not listed here is never masked as an IBAN.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
# The lookbehind comes after the first letter so the scan can skip quickly to letters.
_IBAN_START = re.compile(r"[A-Za-z](?<![^\W_][A-Za-z])[A-Za-z]\d{2}")
# One pattern per BBAN length: exactly that many characters, then the IBAN must end.
_BBAN_BY_LENGTH = {
    n - 4: re.compile(rf"(?:[ \u00a0]?[A-Za-z0-9]){{{n - 4}}}(?![A-Za-z0-9])")
    for n in set(_IBAN_LENGTHS.values())
}

_DIGIT_RUN = re.compile(r"(?<![\w+])\d+(?:[ \u00a0-]\d+)*")
_DIGITS = re.compile(r"\d+")

# Digits, bracketed groups and single separators. Possessive, so a rejected candidate is rejected
# whole instead of being retried as a shorter prefix.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])"
    r"(?:\+[ \u00a0]?)?"
    r"(?:\(\d{1,5}\)|\d+)"
    r"(?:[ \u00a0.-]?\(\d{1,5}\)|(?<=\))[ \u00a0]?\d+|[ \u00a0.-]\d+)*+"
)
_PHONE_WORD = re.compile(
    r"\b(?:phone|telephone|tel|mobile|cell|cellphone|call|ring|text|sms|whats ?app|fax|landline"
    r"|contact|reach|my number|number is|t[ée]l[ée]phone|t[ée]l|portable|handy|telefon|tel[ée]fono"
    r"|m[óo]vil|cellulare)\b",
    re.IGNORECASE,
)
_ID_WORD = re.compile(
    r"\b(?:order|invoice|ref|reference|tracking|parcel|shipment|package|account|acct|sku|ticket"
    r"|case|serial|item|product|transaction|booking|reservation|confirmation|customer|po)"
    r"(?:[ \t]*(?:number|num|no|nr|id|code))?\.?(?:[ \t]+is)?[ \t]*[:#]?[ \t]*$",
    re.IGNORECASE,
)
# How far back a phone word or an id word may be, and how long a written IBAN can be (34
# characters and its spaces), when looking back from a number.
_CONTEXT_CHARS = 40
_IBAN_CONTEXT_CHARS = 48


# --- checks ----------------------------------------------------------------------------------


def _luhn_valid(digits: str) -> bool:
    """The card check digit (ISO/IEC 7812): every second digit from the right doubled."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _iban_valid(compact: str) -> bool:
    """ISO 7064 mod 97-10 as ISO 13616 uses it: first four characters to the end, A-Z as 10-35."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _char(text: str, index: int) -> str:
    # Outside the text reads as a space, so the edges of the text count as word boundaries.
    return text[index] if 0 <= index < len(text) else " "


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _card_glued_before(text: str, start: int) -> bool:
    """A number joined to a word ("ORD-4111...", "x4111...") or after a "+" is not a card."""
    before = _char(text, start - 1)
    return (
        _is_word(before) or before == "+" or (before in "-.,/" and _is_word(_char(text, start - 2)))
    )


def _card_glued_after(text: str, end: int) -> bool:
    after = _char(text, end)
    return _is_word(after) or (after in "-.,/" and _is_word(_char(text, end + 1)))


def _phone_embedded(text: str, start: int, end: int) -> bool:
    """True when the number belongs to a larger token: an id, a price, a URL, a decimal, a time."""
    before, after = _char(text, start - 1), _char(text, end)
    if _is_word(before) or before in "#$€£¥@/\\&=":
        return True
    if before in "-.," and _is_word(_char(text, start - 2)):
        return True
    if _is_word(after) or after in "%$€£¥@":
        return True
    next_char = _char(text, end + 1)
    return (after in "-/" and _is_word(next_char)) or (after in ".,:" and next_char.isdigit())


def _continues_iban_like(text: str, start: int) -> bool:
    """True when a number carries on a string that starts like an IBAN ("NL92 ABNA 0417 ...").

    Such a string that failed the IBAN checks is a mistyped IBAN, not a phone or a card.
    """
    lowest = max(0, start - _IBAN_CONTEXT_CHARS)
    index = start
    # Walk back over letters and digits separated by single spaces, as an IBAN is written.
    while index > lowest and (
        text[index - 1].isalnum()
        or (text[index - 1] in " \u00a0" and index - 2 >= lowest and text[index - 2].isalnum())
    ):
        index -= 1
    words = text[index:start].split()
    return any(_iban_written(words[first:]) for first in range(len(words)))


# Letters an IBAN carries after its country code: a bank code (GB, NL: 4), rarely more.
_IBAN_MAX_LETTERS = 8


def _iban_written(words: list[str]) -> bool:
    """Whether `words` read as the start of an IBAN as people write one: a country code and
    two check digits, then groups of four (or all of it run together), in one case, with few
    letters after the country code. "at 10 am on" is not one."""
    compact = "".join(words)
    head = compact[:4]
    if len(head) < 4 or head[:2].upper() not in _IBAN_LENGTHS or not head[2:].isdigit():
        return False
    if len(words) > 1 and any(len(word) != 4 for word in words):
        return False
    letters = [char for char in compact if char.isalpha()]
    same_case = all(c.isupper() for c in letters) or all(c.islower() for c in letters)
    return same_case and len(letters) - 2 <= _IBAN_MAX_LETTERS


def _looks_like_date(groups: list[str]) -> bool:
    if len(groups) != 3 or not all(1 <= len(group) <= 4 for group in groups):
        return False
    first, second, third = (int(group) for group in groups)
    if len(groups[0]) == 4:  # 2024-03-15
        return 1 <= second <= 12 and 1 <= third <= 31
    if len(groups[2]) in (2, 4) and len(groups[0]) <= 2 and len(groups[1]) <= 2:
        # 15/03/2024 or 03/15/2024: either order, as long as one reading is a valid date
        return (1 <= first <= 31 and 1 <= second <= 12) or (1 <= first <= 12 and 1 <= second <= 31)
    return False


def _is_north_american(groups: list[str]) -> bool:
    if len(groups) == 4 and groups[0] == "1":
        groups = groups[1:]
    return [len(group) for group in groups] == [3, 3, 4] and groups[0][0] in "23456789"


def _is_phone(text: str, start: int, end: int) -> bool:
    candidate = text[start:end]
    if _phone_embedded(text, start, end):
        return False
    groups = _DIGITS.findall(candidate)
    digits = "".join(groups)
    if candidate.startswith("+"):
        # "+44 (0)20 ..." writes the national trunk 0 as a hint; it is not part of the number
        count = len(digits) - candidate.count("(0)")
        return 8 <= count <= 15
    if not 7 <= len(digits) <= 17 or _looks_like_date(groups):
        return False
    if len(groups) == 2 and candidate == ".".join(groups):  # a decimal: "0.97412345678"
        return False
    if digits.startswith("00"):
        shaped = digits[2:3] != "0" and len(digits) >= 10  # 00 + country code: international
    else:
        shaped = (digits[0] == "0" and digits[1] != "0" and 10 <= len(digits) <= 12) or (
            len(groups) > 1 and _is_north_american(groups)
        )
    # Without a phone shape only a phone word can make it one, and dotted numbers with no other
    # sign are versions or addresses; checked first because most numbers in text end here.
    if not shaped and (len(digits) > 15 or "." in candidate):
        return False
    line_start = max(text.rfind("\n", 0, start) + 1, start - _CONTEXT_CHARS)
    if _ID_WORD.search(text, line_start, start) or _continues_iban_like(text, start):
        return False
    return shaped or _PHONE_WORD.search(text, line_start, start) is not None


# --- masking passes --------------------------------------------------------------------------


def _mask_emails(text: str, counts: Counter[PersonalDataKind]) -> str:
    if "@" not in text:
        return text
    masked, count = _EMAIL.subn(PersonalDataKind.EMAIL.placeholder, text)
    counts[PersonalDataKind.EMAIL] += count
    return masked


def _mask_ibans(text: str, counts: Counter[PersonalDataKind]) -> str:
    pieces: list[str] = []
    position = 0
    for head_match in _IBAN_START.finditer(text):
        if head_match.start() < position:
            continue  # inside an IBAN already masked
        head = head_match.group()
        length = _IBAN_LENGTHS.get(head[:2].upper())
        if length is None:
            continue
        bban = _BBAN_BY_LENGTH[length - 4].match(text, head_match.end())
        if bban is None:
            continue
        compact = head + "".join(bban.group().split())
        if not (compact.isupper() or compact.islower() or compact[2:].isdigit()):
            continue  # "De89 3704 Zahlung..." mixed case: words, not an IBAN
        if not _iban_valid(compact.upper()):
            continue
        pieces += [text[position : head_match.start()], PersonalDataKind.IBAN.placeholder]
        position = bban.end()
        counts[PersonalDataKind.IBAN] += 1
    return "".join(pieces) + text[position:] if pieces else text


def _mask_card_run(text: str, run: re.Match[str], counts: Counter[PersonalDataKind]) -> str:
    """Mask the Luhn-valid stretches of whole digit groups in one run of groups."""
    groups = [group.span() for group in _DIGITS.finditer(text, run.start(), run.end())]
    pieces: list[str] = []
    position = run.start()
    first = 0
    while first < len(groups):
        last = _card_stretch_end(text, groups, first)
        if last is None:
            first += 1
            continue
        pieces += [text[position : groups[first][0]], PersonalDataKind.CARD.placeholder]
        position = groups[last][1]
        counts[PersonalDataKind.CARD] += 1
        first = last + 1
    return "".join(pieces) + text[position : run.end()]


def _card_stretch_end(text: str, groups: list[tuple[int, int]], first: int) -> int | None:
    """Index of the last group of the card number that starts at group `first`, if there is one.

    Written with separators, card numbers come in groups of 3+ digits ("4111 1111 1111 1111",
    Amex 4-6-5), except that grouping by four can leave a short last group ("3056 9309 0259 04").
    The longest Luhn-valid stretch wins, one ending on a full group before one ending short.
    """
    start = groups[first][0]
    if text[start] not in "23456":
        return None
    # A stretch starts and ends at the run's edges or at a space: a dash joins an id's parts.
    glued = text[start - 1] == "-" if first else _card_glued_before(text, start)
    if glued:
        return None
    best_full = best_short = None
    size = 0
    for last in range(first, len(groups)):
        group_start, group_end = groups[last]
        if last > first and groups[last - 1][1] - groups[last - 1][0] < 3:
            break  # only the last group may be short
        size += group_end - group_start
        if size > 19:
            break
        if size < 13:
            continue
        if last == len(groups) - 1:
            glued = _card_glued_after(text, group_end)
        else:
            glued = text[group_end] == "-"
        if glued or not _luhn_valid("".join(text[a:b] for a, b in groups[first : last + 1])):
            continue
        if last == first or group_end - group_start >= 3:
            best_full = last
        else:
            best_short = last
    best = best_full if best_full is not None else best_short
    # Checked last, for the few numbers that passed Luhn: it costs more than the rest.
    return None if best is None or _continues_iban_like(text, start) else best


def _mask_cards(text: str, counts: Counter[PersonalDataKind]) -> str:
    def replace(run: re.Match[str]) -> str:
        if run.end() - run.start() < 13:  # fewer than 13 characters cannot hold 13 digits
            return run.group()
        return _mask_card_run(text, run, counts)

    return _DIGIT_RUN.sub(replace, text)


def _mask_phones(text: str, counts: Counter[PersonalDataKind]) -> str:
    def replace(candidate: re.Match[str]) -> str:
        if candidate.end() - candidate.start() < 7 or not _is_phone(
            text, candidate.start(), candidate.end()
        ):
            return candidate.group()
        counts[PersonalDataKind.PHONE] += 1
        return PersonalDataKind.PHONE.placeholder

    return _PHONE_CANDIDATE.sub(replace, text)


# --- public API ------------------------------------------------------------------------------


def mask_personal_data_detailed(text: str) -> MaskResult:
    """Mask emails, IBANs, card numbers and phone numbers, and count what was masked."""
    counts: Counter[PersonalDataKind] = Counter()
    for mask in (_mask_emails, _mask_ibans, _mask_cards, _mask_phones):
        text = mask(text, counts)
    return MaskResult(text=text, counts={kind: n for kind, n in counts.items() if n})


def mask_personal_data(text: str) -> str:
    """Return `text` with personal data replaced by `[EMAIL]`, `[IBAN]`, `[CARD]`, `[PHONE]`.

    Deterministic and idempotent; see the module docstring for what counts as each kind.
    """
    return mask_personal_data_detailed(text).text


# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged by
# the JSON formatter, so it is masked too.
_RECORD_ATTRIBUTES = frozenset(
    {
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
        "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
        "relativeCreated", "thread", "threadName", "processName", "process", "taskName",
    }
)  # fmt: skip


def mask_values(value: Any) -> Any:
    """`value` with personal data masked in every text it holds (dicts, lists and tuples)."""
    if isinstance(value, str):
        return mask_personal_data(value)
    if isinstance(value, dict):
        return {key: mask_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_values(item) for item in value]
    if isinstance(value, tuple):
        return tuple(mask_values(item) for item in value)
    return value


class PersonalDataFilter(logging.Filter):
    """Mask personal data in a log record before any formatter renders it.

    The message is rendered (`msg % args`), masked, and stored back with `args` cleared, because
    personal data usually arrives in the args. A dict message (structured logging) and `extra`
    fields are masked value by value; a traceback is rendered and masked into `exc_text` and
    `exc_info` cleared, since formatters would otherwise render the raw exception again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict) and not record.args:
            record.msg = mask_values(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:
                # A malformed call ("%s %s" with one arg) must not raise at the caller, and
                # logging's own error report would print the raw args: keep them, masked.
                message = f"{record.msg} (unformattable log arguments: {record.args!r})"
            record.msg = mask_personal_data(message)
            record.args = ()
        if record.exc_info and record.exc_info[0] is not None:
            rendered = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = mask_personal_data(rendered)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = mask_personal_data(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_personal_data(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES and isinstance(value, str | dict | list | tuple):
                setattr(record, name, mask_values(value))
        return True
