"""The recommender demo: an outdoor-gear shop catalogue and synthetic shopper sessions."""
