"""Storage: the declarative base, engine and session factories, and the core tables."""

from core.storage.base import Base
from core.storage.engine import get_engine, get_session_factory, session_scope

__all__ = ["Base", "get_engine", "get_session_factory", "session_scope"]
