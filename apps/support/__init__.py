"""Support bot: intents with answer templates, calibrated handoff, helpdesk integrations."""
