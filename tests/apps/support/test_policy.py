"""When the bot hands off (apps.support.policy.decide), given probabilities and thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from apps.support.messages import HandoffReason
from apps.support.policy import asks_for_human, decide

LABELS = ["order_status", "refund", "shipping", "greeting"]
SURE = np.array([0.9, 0.05, 0.03, 0.02])
THRESHOLDS = {"confidence": 0.5, "margin": 0.2, "unfamiliar": 0.4}


@pytest.mark.parametrize(
    ("probabilities", "similarity", "reason"),
    [
        (SURE, 0.8, None),
        (SURE, None, None),  # a model without an example index: no check
        (SURE, 0.39, HandoffReason.UNFAMILIAR),  # sure, but unlike every example
        (np.array([0.45, 0.4, 0.1, 0.05]), 0.8, HandoffReason.LOW_CONFIDENCE),
        (np.array([0.55, 0.4, 0.03, 0.02]), 0.8, HandoffReason.AMBIGUOUS),
        (np.array([0.45, 0.4, 0.1, 0.05]), 0.1, HandoffReason.LOW_CONFIDENCE),  # first reason
    ],
)
def test_reasons_to_hand_off(
    probabilities: np.ndarray, similarity: float | None, reason: HandoffReason | None
) -> None:
    decision = decide(probabilities, LABELS, THRESHOLDS, text="where is it?", similarity=similarity)
    assert decision.intent == "order_status" and decision.handoff_reason is reason


def test_a_version_without_an_unfamiliar_threshold_never_hands_off_as_unfamiliar() -> None:
    thresholds = {"confidence": 0.5, "margin": 0.2}
    decision = decide(SURE, LABELS, thresholds, text="where is it?", similarity=-1.0)
    assert decision.handoff_reason is None


def test_asking_for_a_person_wins_over_everything() -> None:
    decision = decide(SURE, LABELS, THRESHOLDS, text="let me talk to a human", similarity=0.0)
    assert decision.handoff_reason is HandoffReason.ASKED_FOR_HUMAN


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("I want to talk to a human", True),
        ("can I speak to a real person", True),
        ("please transfer me to an agent", True),
        ("please escalate this", True),
        ("I don't want the bot, I want to speak to an agent", True),
        ("why can't I talk to a human?", True),
        # everyday words that are not a request for a person
        ("Could you transfer me 20 euros back? I was charged a fee", False),
        ("I don't need to speak to an agent, just tell me how to change my PIN", False),
        ("no need to escalate, how do I change my pin?", False),
        ("I do not want to talk to a person, where is my order?", False),
    ],
)
def test_what_counts_as_asking_for_a_person(text: str, asks: bool) -> None:
    assert asks_for_human(text) is asks
