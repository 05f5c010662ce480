"""Task modules; importing this package declares every task of the suite."""

from workers.tasks import diagnostics, support, support_delivery, training

__all__ = ["diagnostics", "support", "support_delivery", "training"]
