"""What in the catalogue needs a person's attention: intents with too few examples or no
answer, intents the production model has not learnt (or that it learnt and the catalogue has
since lost), and the intents its held-out messages show it mixes up. (One example under two
intents cannot happen: the catalogue refuses it.)"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from apps.support.catalogue import list_intents
from apps.support.settings import SupportSettings
from core.ml.versions import production_version

MIN_EXAMPLES = 8  # what few-shot training needs per intent to do well
WEAK_F1 = 0.8  # held-out F1 under this is worth a look
CONFUSED_SHARE = 0.2  # an intent's held-out messages taken for another this often or more


@dataclass
class IntentHealth:
    name: str
    examples: int
    validation_f1: float | None = None  # the production model's, on its held-out messages
    confused_with: dict[str, int] = field(default_factory=dict)  # taken for, how many times
    problems: list[str] = field(default_factory=list)


@dataclass
class CatalogueHealth:
    model_version: int | None
    intents: list[IntentHealth]  # the ones with problems first, then by name
    unknown_to_catalogue: list[str]  # intents the model answers that the catalogue lost

    @property
    def problems(self) -> int:
        return sum(len(intent.problems) for intent in self.intents) + len(self.unknown_to_catalogue)


def catalogue_health(session: Session, support: SupportSettings) -> CatalogueHealth:
    summaries = list_intents(session)
    version = production_version(session, support.model_name)
    metrics = version.metrics if version is not None else {}
    learnt = set(version.config.get("labels", [])) if version is not None else set()
    per_class = metrics.get("per_class", {})
    confusion = _confusions(metrics.get("confusion_matrix") or {})
    health = []
    for summary in summaries:
        intent = IntentHealth(summary.name, summary.example_count)
        if summary.example_count < MIN_EXAMPLES:
            intent.problems.append(
                f"{summary.example_count} example{'' if summary.example_count == 1 else 's'}: "
                f"give it at least {MIN_EXAMPLES}"
            )
        if not summary.answer and not summary.handoff:
            intent.problems.append("no answer template: every message it matches is handed off")
        if version is not None and summary.name not in learnt:
            intent.problems.append(
                f"not in the production model (v{version.version}): retrain to answer it"
            )
        scores = per_class.get(summary.name, {})
        if scores.get("support"):  # held-out messages of it to judge by
            intent.validation_f1 = float(scores["f1"])
            if intent.validation_f1 < WEAK_F1:
                intent.problems.append(
                    f"held-out F1 {intent.validation_f1:.2f}: add examples that set it apart"
                )
        intent.confused_with = confusion.get(summary.name, {})
        for other, count in intent.confused_with.items():
            intent.problems.append(
                f"taken for {other} in {count} of its held-out messages: add examples that "
                f"tell the two apart, or merge them"
            )
        health.append(intent)
    health.sort(key=lambda intent: (not intent.problems, intent.name))
    names = {summary.name for summary in summaries}
    return CatalogueHealth(
        model_version=version.version if version is not None else None,
        intents=health,
        unknown_to_catalogue=sorted(learnt - names),
    )


def _confusions(confusion: dict) -> dict[str, dict[str, int]]:
    """Per true intent, the intents it was predicted as in at least `CONFUSED_SHARE` of its
    held-out messages."""
    labels, matrix = confusion.get("labels", []), confusion.get("matrix", [])
    found: dict[str, dict[str, int]] = defaultdict(dict)
    for i, row in enumerate(matrix):
        total = sum(row)
        for j, count in enumerate(row):
            if i != j and total and count and count / total >= CONFUSED_SHARE:
                found[labels[i]][labels[j]] = int(count)
    return found
