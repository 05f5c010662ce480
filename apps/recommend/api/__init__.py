"""HTTP routes of the recommender (mounted under `/v1/recommend`)."""
