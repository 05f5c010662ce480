"""Task modules; importing this package declares every task of the suite."""

from workers.tasks import (
    diagnostics,
    recommend,
    sentiment,
    sentiment_notify,
    support,
    support_delivery,
    training,
)

__all__ = [
    "diagnostics",
    "recommend",
    "sentiment",
    "sentiment_notify",
    "support",
    "support_delivery",
    "training",
]
