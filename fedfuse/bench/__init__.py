"""The harness: suites, the runner on Flower, services handed to protocols, the CLI."""
