"""The deployment engine: one cell per Flower run on a SuperLink and SuperNodes (engine.py), the
Flower apps it installs (flower_app.py), a local deployment and its warm executors (local.py,
executor.py), TLS and node keys (tls.py), and Flower's hard-coded waits capped (flower_patches.py)."""
