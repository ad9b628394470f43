"""Built-in protocols. Each folder is a plugin registered through the ``fedfuse`` entry points."""
