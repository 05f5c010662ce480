"""Task modules; importing this package declares every task of the suite."""

from workers.tasks import diagnostics

__all__ = ["diagnostics"]
