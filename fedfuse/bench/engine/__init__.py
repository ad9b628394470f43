"""The engine that runs one cell on Flower's simulation: the runner, the services a protocol's loops receive, the round helpers, the counting grid, reply checks and the harness's scoring."""
