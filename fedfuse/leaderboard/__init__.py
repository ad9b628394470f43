"""Results store, result tables and (later) ranking and publishing."""
