"""The three applications: support bot, news sentiment monitor, recommender."""
