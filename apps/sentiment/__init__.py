"""News sentiment monitor: ingest, finance sentiment scoring, per-company alerts, dashboard."""
