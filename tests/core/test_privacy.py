"""Personal data masking: what must be masked, what must survive, and the logging filter."""

from __future__ import annotations

import io
import json
import logging
import string
from collections.abc import Iterator

import pytest
from pythonjsonlogger.json import JsonFormatter

from core.logs import configure_logging
from core.privacy import (
    MaskResult,
    PersonalDataFilter,
    PersonalDataKind,
    mask_personal_data,
    mask_personal_data_detailed,
)
from core.settings import Settings
from tests.conftest import make_settings

# --- factories -------------------------------------------------------------------------------


def luhn_complete(partial: str) -> str:
    """`partial` plus the check digit that makes it Luhn-valid (how card numbers are issued)."""
    for check in string.digits:
        total = 0
        for position, char in enumerate(reversed(partial + check)):
            value = int(char) * (2 if position % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return partial + check
    raise AssertionError("unreachable: one check digit always fits")


def break_last_digit(number: str) -> str:
    """The same number with its last digit changed, so the Luhn check fails."""
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def make_iban(country: str, bban: str) -> str:
    """A valid IBAN for `bban`, check digits computed as ISO 13616 says (98 - n mod 97)."""
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def grouped(number: str, size: int = 4, sep: str = " ") -> str:
    return sep.join(number[i : i + size] for i in range(0, len(number), size))


# --- what must be masked ---------------------------------------------------------------------

MUST_MASK = [
    # emails
    ("Please reply to jane.doe@example.com, thanks", "Please reply to [EMAIL], thanks"),
    ("Email: JOHN.SMITH+orders@Mail.Example.co.uk.", "Email: [EMAIL]."),
    ("<j_o'neill@shop-example.de>, 'a.b@example.com'", "<[EMAIL]>, '[EMAIL]'"),
    ("mailto:support-team@example.org?subject=refund", "mailto:[EMAIL]?subject=refund"),
    ("write to josé.garcía@correo.es por favor", "write to [EMAIL] por favor"),
    # phones, international
    ("Call me on +44 20 7946 0958 after 5pm", "Call me on [PHONE] after 5pm"),
    ("My number is +1 (415) 555-2671.", "My number is [PHONE]."),
    ("UK office 0044 20 7946 0958 or +44 (0)20 7946 0958", "UK office [PHONE] or [PHONE]"),
    ("Tel:+33 6 12 34 56 78", "Tel:[PHONE]"),
    ("+49 30 1234567 (Berlin), +34 612 34 56 78", "[PHONE] (Berlin), [PHONE]"),
    ("whatsapp +447700900123", "whatsapp [PHONE]"),
    ("US line +1-415-555-2671 / +1.415.555.2671", "US line [PHONE] / [PHONE]"),
    # phones, national with a trunk prefix
    ("ring me on 020 7946 0958 or 07700 900123", "ring me on [PHONE] or [PHONE]"),
    ("Mobile: 07700900123", "Mobile: [PHONE]"),
    ("Mon portable : 06 12 34 56 78 ou 06.12.34.56.78", "Mon portable : [PHONE] ou [PHONE]"),
    ("Festnetz 030 12345678, Handy 0171 1234567", "Festnetz [PHONE], Handy [PHONE]"),
    ("bel 06-12345678 of 020-1234567", "bel [PHONE] of [PHONE]"),
    ("Our freephone (0800) 123 4567 is open", "Our freephone [PHONE] is open"),
    ("my number (07700 900123) works", "my number ([PHONE]) works"),
    # phones, North American shape
    ("reach me at (415) 555-2671 or 415-555-2671", "reach me at [PHONE] or [PHONE]"),
    ("office 415.555.2671, toll free 1-800-555-0199", "office [PHONE], toll free [PHONE]"),
    ("cellulare 347 123 4567", "cellulare [PHONE]"),
    # phones recognised only because a phone word comes before them
    ("call me at 4155552671 tomorrow", "call me at [PHONE] tomorrow"),
    ("text me on 612 34 56 78", "text me on [PHONE]"),
    ("Phone: 9123 4567", "Phone: [PHONE]"),
    ("order 4417 arrived, call 555-2671", "order 4417 arrived, call [PHONE]"),
    # cards (test numbers from the networks' documentation)
    ("card 4111 1111 1111 1111 exp 12/26", "card [CARD] exp 12/26"),
    ("paid with 5500-0000-0000-0004 yesterday", "paid with [CARD] yesterday"),
    ("Amex 3782 822463 10005 and 378282246310005", "Amex [CARD] and [CARD]"),
    ("visa 4012888888881881, mc 5105 1051 0510 5100", "visa [CARD], mc [CARD]"),
    ("Discover 6011 1111 1111 1117; JCB 3530-1113-3330-0000", "Discover [CARD]; JCB [CARD]"),
    ("diners 3056 9309 0259 04, mc2 2223 0031 2200 3222", "diners [CARD], mc2 [CARD]"),
    ("4111 1111 1111 1111 12/26 123", "[CARD] 12/26 123"),
    ("(4111111111111111)", "([CARD])"),
    (
        "https://pay.example.com/?card=4111111111111111&ok=1",
        "https://pay.example.com/?card=[CARD]&ok=1",
    ),
    ("cards 4111111111111111 5500000000000004", "cards [CARD] [CARD]"),
    # IBANs
    ("IBAN: GB82 WEST 1234 5698 7654 32 thanks", "IBAN: [IBAN] thanks"),
    ("DE89 3704 0044 0532 0130 00", "[IBAN]"),
    ("pay FR14 2004 1010 0505 0001 3M02 606.", "pay [IBAN]."),
    ("NL91ABNA0417164300 / BE68 5390 0754 7034", "[IBAN] / [IBAN]"),
    ("CH93 0076 2011 6238 5295 7 and NO93 8601 1117 947", "[IBAN] and [IBAN]"),
    ("IT60 X054 2811 1010 0000 0123 456, ES9121000418450200051332", "[IBAN], [IBAN]"),
    ("lowercase gb82west12345698765432 too", "lowercase [IBAN] too"),
    # words before a number that start like an IBAN ("at 10" as AT10, "is 01" as IS01)
    ("I paid at 10 am with card 4111 1111 1111 1111", "I paid at 10 am with card [CARD]"),
    (
        "I was at 10 shops and my card 4111 1111 1111 1111 failed",
        "I was at 10 shops and my card [CARD] failed",
    ),
    ("reach me at 10 am on 07700 900123", "reach me at 10 am on [PHONE]"),
    (
        "my phone is 0151 496 0123 and my card is 5500-0000-0000-0004",
        "my phone is [PHONE] and my card is [CARD]",
    ),
    # several kinds in one message
    (
        "Hi, it's Jane (jane@example.com, 07700 900123). Refund to GB82WEST12345698765432 please,"
        " not to card 4111-1111-1111-1111.",
        "Hi, it's Jane ([EMAIL], [PHONE]). Refund to [IBAN] please, not to card [CARD].",
    ),
]


@pytest.mark.parametrize(("text", "expected"), MUST_MASK)
def test_masks_personal_data_and_keeps_the_text_around_it(text: str, expected: str) -> None:
    assert mask_personal_data(text) == expected


# --- what must survive -----------------------------------------------------------------------

MUST_NOT_MASK = [
    # metrics and decimals, as they appear in logs ("0" then 10-12 digits looks national)
    "{'temperature': 0.97412345678, 'ece': 0.012059149690062373}",
    "calibrated: temperature 0.974123456789",
    # order, invoice, ticket and tracking numbers
    "Where is my order #A-10423?",
    "order 4417 3392 has not arrived",
    "Reference ORD-2024-000123, invoice INV-000123456789",
    "Order no. 0123456789 was cancelled",
    "order number is 0123 456 789",
    "ticket 12345678 is still open",
    "tracking 1Z999AA10123456784 (UPS)",
    "USPS 9400 1000 0000 0000 0000 00",
    "FedEx 7489 2345 6789, DHL JD014600006281230704",
    "ISBN 978-3-16-148410-0",
    "transaction 1234567890123 failed",
    # cards that fail Luhn or are not payment cards
    "card 4111 1111 1111 1112",
    "5500-0000-0000-0005",
    "4417 1234 5678 9112",
    "1234567812345670",  # Luhn-valid but 1 is not a payment-card industry digit
    "serial 7992739871300",  # Luhn-valid, 13 digits, starts with 7
    "ORD-4111111111111111",
    "4111111111111111abc",
    # IBANs with a wrong check digit, length or country
    "GB83 WEST 1234 5698 7654 32",
    "DE89 3704 0044 0532 0130 01",
    "DE89 3704 0044 0532 0130 0",
    "DE89 3704 0044 0532 0130 001",
    "QQ82 WEST 1234 5698 7654 32",
    "De89 West 1234 5698 7654 32",
    # prices and amounts
    "It cost $1,299.99 plus € 49,90 shipping",
    "Total 1.299,00 € (incl. 19 % VAT), was £1,049.00",
    "USD 12,499.00 or 1 299 000 yen",
    "refund 2 x 649.99",
    # dates and times
    "delivered 2024-03-15, promised 15/03/2024",
    "from 15.03.2024 to 03/15/2024, or 2024/03/15",
    "call me on 2024-03-15 at 14:30",
    "open 9:05 am to 17.30, 2024-03-15T14:30:00Z",
    "text me 15-03-2024 or 15 03 2024",
    # quantities, percentages, postcodes, versions, addresses
    "3 items, 500 g each, 12.5% off, qty 1000",
    "SW1A 1AA London, 75008 Paris, 10115 Berlin, 94103-1234, 02134-1234",
    "app v2.14.3 on Windows 10.0.19045.2965, iOS 17.4.1",
    "server 192.168.100.200 port 8080",
    "coordinates 51.5074, -0.1278",
    "the phone app version is 10.0.19045.2965",
    "https://shop.example.com/orders/0123456789?page=2",
    # plain digit runs with nothing that makes them a phone number
    "customer since 2019, unix time 1710498600",
    "4155552671",
    "123-456-7890",
    # not an email
    "jane at example dot com, @jane_doe, user@localhost",
    # already masked
    "[EMAIL] [PHONE] [CARD] [IBAN]",
]


@pytest.mark.parametrize("text", MUST_NOT_MASK)
def test_leaves_other_numbers_and_text_unchanged(text: str) -> None:
    assert mask_personal_data(text) == text


# --- generated cards and IBANs ---------------------------------------------------------------

CARD_PARTIALS = [
    "411111111111111",  # Visa 16
    "422222222222",  # Visa 13
    "401288888888188",  # Visa 16
    "452012345678901234",  # Visa 19
    "37828224631000",  # Amex 15
    "55000000000000",  # Mastercard 15 (generated)
    "222300312200322",  # Mastercard 2-series 16
    "601111111111111",  # Discover 16
    "62123456789012345",  # UnionPay 18
]


@pytest.mark.parametrize("partial", CARD_PARTIALS)
@pytest.mark.parametrize("layout", ["plain", "spaces", "dashes"])
def test_masks_only_luhn_valid_cards(partial: str, layout: str) -> None:
    number = luhn_complete(partial)
    invalid = break_last_digit(number)

    def write(digits: str) -> str:
        return {"plain": digits, "spaces": grouped(digits), "dashes": grouped(digits, sep="-")}[
            layout
        ]

    assert mask_personal_data(f"charged {write(number)} twice") == "charged [CARD] twice"
    assert (
        mask_personal_data(f"charged {write(invalid)} twice") == f"charged {write(invalid)} twice"
    )


IBAN_BBANS = [
    ("GB", "WEST12345698765432"),
    ("DE", "370400440532013000"),
    ("FR", "20041010050500013M02606"),
    ("NL", "ABNA0417164300"),
    ("ES", "21000418450200051332"),
    ("PL", "109010140000071219812874"),
    ("NO", "86011117947"),
    ("MT", "MALT011000012345MTLCAST001S"),
]


@pytest.mark.parametrize(("country", "bban"), IBAN_BBANS)
def test_masks_only_mod97_valid_ibans_of_the_right_length(country: str, bban: str) -> None:
    iban = make_iban(country, bban)
    wrong_check = f"{iban[:2]}{(int(iban[2:4]) + 1) % 100:02d}{iban[4:]}"
    too_long = make_iban(country, bban + "0")

    assert mask_personal_data(f"IBAN {grouped(iban)} ok") == "IBAN [IBAN] ok"
    assert mask_personal_data(f"IBAN {iban} ok") == "IBAN [IBAN] ok"
    for rejected in (wrong_check, grouped(wrong_check), too_long):
        assert mask_personal_data(f"IBAN {rejected} ok") == f"IBAN {rejected} ok"


def test_check_digits_from_the_factory_match_published_ibans() -> None:
    # Guards the factory itself: a wrong make_iban would make the test above meaningless.
    assert make_iban("GB", "WEST12345698765432") == "GB82WEST12345698765432"
    assert make_iban("DE", "370400440532013000") == "DE89370400440532013000"
    assert luhn_complete("411111111111111") == "4111111111111111"


# --- properties ------------------------------------------------------------------------------

REALISTIC_MESSAGE = (
    "Hello, my order #A-10423 placed on 15/03/2024 for $1,299.99 still hasn't arrived and the "
    "tracking page (1Z999AA10123456784) hasn't changed since 14:30 yesterday. I was charged "
    "twice on my Visa 4111 1111 1111 1111, 2 x 649.99. Please refund one charge to my account "
    "DE89 3704 0044 0532 0130 00 or send the second item to my sister at 12 Baker Street, "
    "London NW1 6XE. Reach me on 07700 900123 or +44 20 7946 0958, or by email at "
    "jane.doe@example.com. I'm free between 9 and 17. The item is the 27-inch monitor X2700 "
    "(firmware 2.1.4), reference ORD-2024-000123. Thanks, Jane"
)
REALISTIC_MASKED = (
    "Hello, my order #A-10423 placed on 15/03/2024 for $1,299.99 still hasn't arrived and the "
    "tracking page (1Z999AA10123456784) hasn't changed since 14:30 yesterday. I was charged "
    "twice on my Visa [CARD], 2 x 649.99. Please refund one charge to my account "
    "[IBAN] or send the second item to my sister at 12 Baker Street, "
    "London NW1 6XE. Reach me on [PHONE] or [PHONE], or by email at "
    "[EMAIL]. I'm free between 9 and 17. The item is the 27-inch monitor X2700 "
    "(firmware 2.1.4), reference ORD-2024-000123. Thanks, Jane"
)


def test_a_realistic_customer_message() -> None:
    result = mask_personal_data_detailed(REALISTIC_MESSAGE)

    assert result.text == REALISTIC_MASKED
    assert result.counts == {
        PersonalDataKind.EMAIL: 1,
        PersonalDataKind.IBAN: 1,
        PersonalDataKind.CARD: 1,
        PersonalDataKind.PHONE: 2,
    }
    assert result.found


def test_nothing_found_is_reported_as_such() -> None:
    assert mask_personal_data_detailed("order 4417 3392, $1,299.99") == MaskResult(
        text="order 4417 3392, $1,299.99"
    )
    assert not mask_personal_data_detailed("").found


@pytest.mark.parametrize(
    "text", [text for text, _ in MUST_MASK] + MUST_NOT_MASK + [REALISTIC_MESSAGE]
)
def test_masking_twice_is_masking_once(text: str) -> None:
    once = mask_personal_data(text)
    assert mask_personal_data(once) == once


@pytest.mark.parametrize(
    "hostile",
    ["1 " * 5000, "4" * 19 + " 4" * 5000, "a@" * 5000, "x@" + "a-" * 5000, "(0) " * 3000],
)
@pytest.mark.timeout(10)  # a backtracking regex would take minutes on these, not milliseconds
def test_hostile_input_is_handled(hostile: str) -> None:
    masked = mask_personal_data(hostile)
    assert mask_personal_data(masked) == masked


# --- logging ---------------------------------------------------------------------------------


@pytest.fixture
def captured_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing through a filtered handler into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(PersonalDataFilter())
    logger = logging.getLogger(f"tests.privacy.{id(buffer)}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)


def test_log_filter_masks_personal_data_passed_as_args(
    captured_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = captured_logger
    logger.info("message from %s (%s) about order %s", "jane@example.com", "07700 900123", 4417)

    assert buffer.getvalue() == "INFO message from [EMAIL] ([PHONE]) about order 4417\n"


def test_log_filter_masks_tracebacks(captured_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured_logger
    try:
        raise ValueError("card 4111 1111 1111 1111 declined for jane@example.com")
    except ValueError:
        logger.exception("payment failed")

    output = buffer.getvalue()
    assert "ValueError: card [CARD] declined for [EMAIL]" in output
    assert "Traceback (most recent call last)" in output
    assert "4111" not in output and "jane@" not in output


def test_log_filter_survives_a_malformed_call_without_leaking(
    captured_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = captured_logger
    logger.warning("two placeholders %s %s, one arg", "jane@example.com")

    assert "[EMAIL]" in buffer.getvalue() and "jane@" not in buffer.getvalue()


def test_log_filter_masks_structured_messages_and_extra_fields() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("{levelname}{message}", style="{"))
    handler.addFilter(PersonalDataFilter())
    logger = logging.getLogger("tests.privacy.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning({"event": "refund", "iban": "GB82 WEST 1234 5698 7654 32"})
        logger.warning("reply sent", extra={"to": "jane@example.com", "attempt": 2})
        try:
            raise RuntimeError("helpdesk rejected +44 20 7946 0958")
        except RuntimeError:
            logger.exception("callback failed")
    finally:
        logger.removeHandler(handler)

    first, second, third = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["iban"] == "[IBAN]" and first["event"] == "refund"
    assert second["to"] == "[EMAIL]" and second["attempt"] == 2
    assert second["message"] == "reply sent"
    assert third["exc_info"].endswith("RuntimeError: helpdesk rejected [PHONE]")


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging rewires the root logger (and, for JSON, turns progress bars off);
    put everything back afterwards."""
    for variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        monkeypatch.setenv(variable, "")  # recorded, so the end restores it as it was
        monkeypatch.delenv(variable)
    names = [
        "",
        "uvicorn",
        "uvicorn.error",
        "uvicorn.access",
        "celery",
        "alembic.runtime.migration",
    ]
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
               logging.getLogger(name).propagate)
        for name in names
    }  # fmt: skip
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    bars = (are_progress_bars_disabled(), transformers_logging.is_progress_bar_enabled())
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
    if not bars[0]:
        enable_progress_bars()
    if bars[1]:
        transformers_logging.enable_progress_bar()


@pytest.mark.usefixtures("restored_logging")
def test_json_logs_turn_off_progress_bars_of_libraries_already_imported() -> None:
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as transformers_logging

    configure_logging(make_settings(log_format="json"))
    assert not transformers_logging.is_progress_bar_enabled()  # "Loading weights"
    assert are_progress_bars_disabled()


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("log_format", ["console", "json"])
def test_configured_logging_never_writes_personal_data(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(make_settings(log_format=log_format, log_level="INFO"))

    logging.getLogger("apps.support").info(
        "stored message %r from %s", "call me on +44 20 7946 0958", "jane.doe@example.com"
    )

    err = capsys.readouterr().err
    assert "[PHONE]" in err and "[EMAIL]" in err
    assert "7946" not in err and "jane.doe" not in err


@pytest.mark.usefixtures("restored_logging")
def test_json_lines_carry_a_utc_time_and_the_request_id(
    capsys: pytest.CaptureFixture[str], service_settings: Settings
) -> None:
    """A line in JSON says when in ISO 8601 UTC and, logged while serving a request, which
    one: the caller's `X-Request-ID` where it sends a usable one, else a new id, echoed back."""
    from fastapi.testclient import TestClient

    from textsuite.service import create_service

    configure_logging(make_settings(log_format="json", log_level="DEBUG"))
    with TestClient(create_service(service_settings)) as client:
        capsys.readouterr()
        given = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
        made = client.get("/healthz", headers={"X-Request-ID": "bad id;"})
    assert given.headers["x-request-id"] == "trace-42"
    assert len(made.headers["x-request-id"]) == 32  # a new one: the sent one could forge lines
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    served = [line for line in lines if line["logger"] == "textsuite.http"]  # GET ... -> 200
    assert [line["request_id"] for line in served] == ["trace-42", made.headers["x-request-id"]]
    assert all(line["time"].endswith("+00:00") for line in lines)
