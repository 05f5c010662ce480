from __future__ import annotations

import pytest

from apps.support.slots import slots_from_text
from apps.support.templates import TemplateError, render, slot_names


def test_slots_are_filled_and_defaults_used() -> None:
    template = "Hi {customer_name|there}, order {order_id} ships {when|soon}."
    done = render(template, {"order_id": "A-1042", "when": ""})
    assert done.text == "Hi there, order A-1042 ships soon."
    assert done.missing == ()
    assert slot_names(template) == ["customer_name", "order_id", "when"]


def test_missing_slot_without_default_is_reported() -> None:
    done = render("Your order {order_id} is on its way.", {})
    assert done.missing == ("order_id",)


def test_literal_braces_and_defaults_with_punctuation() -> None:
    done = render("Use code {{SAVE10}} now, {name|dear customer, hello}!", {})
    assert done.text == "Use code {SAVE10} now, dear customer, hello!"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Hello {name", "unmatched '{' at character 7"),
        ("Hello name}", "unmatched '}' at character 11"),
        ("Hi {Name}", "bad slot '{Name}' at character 4"),
        ("Hi {}", "bad slot '{}'"),
    ],
)
def test_bad_templates_say_where(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        slot_names(template)


@pytest.mark.parametrize(
    ("text", "order_id"),
    [
        ("where is my order TH-104233?", "TH-104233"),
        ("order #104233 hasn't arrived", "104233"),
        ("my order number is 104233, where is it", "104233"),
        ("the order was 55512, placed Monday", "55512"),
        ("my order is 3 days late", None),
        ("where is my order [CARD]", None),  # masked first: a card number is not an order
    ],
)
def test_an_order_number_is_read_from_what_the_customer_typed(
    text: str, order_id: str | None
) -> None:
    assert slots_from_text(text).get("order_id") == order_id
