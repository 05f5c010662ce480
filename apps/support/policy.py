"""When the bot answers and when it hands the conversation to a person (pure functions).

The thresholds come from the model version (calibrated on held-out examples, see
`apps.support.training`), not from constants here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from apps.support.messages import Alternative, HandoffReason

# Used only when a model version carries no thresholds (trained before they existed).
FALLBACK_THRESHOLDS = {"confidence": 0.5, "margin": 0.1}

# The customer asks for a person, whatever the classifier thinks.
_HUMAN = re.compile(
    r"\b(?:(?:talk|speak|chat)\s+(?:to|with)\s+(?:a\s+|an\s+|some\s*one|some\s*body|your\s+)?"
    r"(?:real\s+|live\s+|actual\s+)?(?:human|person|agent|operator|someone|somebody|"
    r"representative|rep|staff|colleague)s?|(?:real|live|actual)\s+(?:human|person|agent)|"
    r"human\s+(?:agent|being|please)|customer\s+service\s+(?:agent|rep(?:resentative)?)|"
    r"(?:transfer|put|connect)\s+me\s+(?:to|through\s+to|with)\s+(?:a\s+|an\s+|the\s+)?"
    r"(?:human|person|agent|operator|representative|manager|supervisor)|"
    r"escalate\s+(?:this|it|my\s+(?:case|issue|complaint|ticket)))\b",
    re.IGNORECASE,
)
# "I don't need to speak to an agent": a request said not to be one, in the same clause.
_DECLINED = re.compile(
    r"\b(?:don'?t|do\s+not|doesn'?t|no\s+need|not|never|without)\b[^.,;!?]{0,30}$",
    re.IGNORECASE,
)


def asks_for_human(text: str) -> bool:
    return any(_DECLINED.search(text[: match.start()]) is None for match in _HUMAN.finditer(text))


@dataclass(frozen=True)
class Decision:
    intent: str
    confidence: float
    margin: float
    alternatives: list[Alternative]  # the next most likely intents
    handoff_reason: HandoffReason | None


def decide(
    probabilities: np.ndarray,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    *,
    text: str,
    similarity: float | None = None,
    handoff_intents: frozenset[str] = frozenset(),
) -> Decision:
    """The top intent and whether to hand off, for one message's probabilities (C,).

    `similarity` is the message's cosine to the nearest training example
    (`core.ml.novelty`), where the model has one; under the version's `unfamiliar` threshold
    the message is handed off even when the classifier is sure of it."""
    order = np.argsort(-probabilities)  # (C,) most likely first
    confidence = float(probabilities[order[0]])
    runner_up = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    top = labels[order[0]]
    alternatives = [Alternative(labels[i], round(float(probabilities[i]), 4)) for i in order[1:4]]
    limits = {**FALLBACK_THRESHOLDS, **thresholds}
    reason: HandoffReason | None = None
    if asks_for_human(text) or (top in handoff_intents and confidence >= limits["confidence"]):
        reason = HandoffReason.ASKED_FOR_HUMAN
    elif confidence < limits["confidence"]:
        reason = HandoffReason.LOW_CONFIDENCE
    elif confidence - runner_up < limits["margin"]:
        reason = HandoffReason.AMBIGUOUS
    elif similarity is not None and similarity < limits.get("unfamiliar", -1.0):
        reason = HandoffReason.UNFAMILIAR
    return Decision(top, round(confidence, 4), confidence - runner_up, alternatives, reason)
