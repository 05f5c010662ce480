"""HTTP routes of the sentiment monitor (mounted under `/v1/sentiment`)."""
