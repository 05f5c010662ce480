"""Celery workers: the app factory, the house task decorator, dispatchers and thin tasks."""
