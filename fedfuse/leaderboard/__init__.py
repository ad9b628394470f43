"""The leaderboard: records grouped into ranked rows (rows.py, ranking.py), Markdown/HTML/JSON, W&B publishing."""
