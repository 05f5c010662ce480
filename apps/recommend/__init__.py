"""Recommender: text-aware recommendations from catalogue text and user behaviour."""
