"""The plugin contract: hook specifications, spec records and the plugin manager."""

import pluggy

PROJECT = "fedfuse"
ENTRY_POINT_GROUP = "fedfuse"

#: Decorate a plugin's functions with this to implement a hook (``@hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)

from fedfuse.plugins.specs import (  # noqa: E402  (markers first: specs import nothing from here)
    DatasetSpec,
    MetricSpec,
    PartitionerSpec,
    ProtocolSpec,
    StudySpec,
)

__all__ = ["hookimpl", "ProtocolSpec", "DatasetSpec", "PartitionerSpec", "MetricSpec", "StudySpec"]
