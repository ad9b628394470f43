"""The commands (`fedfuse run`, `results`, `leaderboard`, `report`, ...): argument parsing and output; the work is elsewhere."""
