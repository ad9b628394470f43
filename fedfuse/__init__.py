"""fedfuse: a pluggable protocol benchmark harness for collaborative training of diffusion models."""

__version__ = "0.1.0"
