"""Results: the store one output folder holds (store.py), its lock (outlock.py), and what a
record says of itself (record.py). Written by the engine, read by the leaderboard and reports."""
