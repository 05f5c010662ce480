"""Task modules; importing this package declares every task of the suite."""

from workers.tasks import diagnostics, training

__all__ = ["diagnostics", "training"]
