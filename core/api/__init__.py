"""HTTP building blocks: the app factory, dependencies, auth, health and jobs routes."""

from core.api.app import create_app

__all__ = ["create_app"]
