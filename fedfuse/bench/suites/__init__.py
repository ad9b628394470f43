"""Suites and tracks: TOML parsing and checking, expansion of a matrix into cells, pre-flight."""
