"""Shared core: settings, storage, jobs, security, HTTP building blocks and (later) the ML engine.

Nothing here knows about the apps or the workers; they build on it.
"""
