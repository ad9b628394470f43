"""Load plugins from the ``fedfuse`` entry-point group and index what they provide."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pluggy

from fedfuse.plugins import ENTRY_POINT_GROUP, PROJECT, hookspecs

#: collect hook -> the kind of thing it provides (used in messages and `fedfuse list`)
KINDS = {
    "protocols": "fedfuse_add_protocols",
    "datasets": "fedfuse_add_datasets",
    "partitioners": "fedfuse_add_partitioners",
    "metrics": "fedfuse_add_metrics",
    "profiles": "fedfuse_add_profiles",
}


class PluginError(Exception):
    """A plugin is broken or two plugins collide. The message names the plugins."""


@dataclass(frozen=True)
class Entry:
    """One registered thing and the plugin it came from."""

    spec: Any
    plugin: str


class _PluginManager(pluggy.PluginManager):
    """Treats every ``fedfuse_*`` function as a hook implementation, decorated or not,
    so that a misspelt hook name fails at start-up instead of being silently ignored."""

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("fedfuse_") and callable(getattr(plugin, name, None)):
            opts = {}
        return opts


def new_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = _PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise PluginError(f"plugin {describe(pm, err.plugin)}: {err}") from None
    return pm


def describe(pm: pluggy.PluginManager, plugin: object) -> str:
    """'name' (from distribution d x.y) — where a plugin comes from, for messages."""
    name = pm.get_name(plugin) or repr(plugin)
    for dist_plugin, dist in pm.list_plugin_distinfo():
        if dist_plugin is plugin:
            return f"'{name}' (distribution {dist.project_name} {dist.version})"
    return f"'{name}' ({getattr(plugin, '__name__', type(plugin).__name__)})"


def collect(pm: pluggy.PluginManager, kind: str) -> dict[str, Entry]:
    """Call one collect hook on every plugin; index the specs by name, refusing duplicates."""
    hook = getattr(pm.hook, KINDS[kind])
    entries: dict[str, Entry] = {}
    for impl in reversed(hook.get_hookimpls()):  # registration order
        source = describe(pm, impl.plugin)
        for spec in impl.function() or []:
            if spec.name in entries:
                first = entries[spec.name].plugin
                raise PluginError(
                    f"{kind[:-1]} '{spec.name}' is registered twice: by plugin {first} "
                    f"and by plugin {source}"
                )
            entries[spec.name] = Entry(spec, source)
    return entries


class Registry:
    """The plugin manager plus lazily collected indexes of protocols, datasets, ..."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._cache: dict[str, dict[str, Entry]] = {}

    def entries(self, kind: str) -> dict[str, Entry]:
        if kind not in self._cache:
            self._cache[kind] = collect(self.pm, kind)
        return self._cache[kind]

    def get(self, kind: str, name: str) -> Any:
        entries = self.entries(kind)
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none"
            raise PluginError(f"unknown {kind[:-1]} '{name}'; available: {known}")
        return entries[name].spec

    def plugins(self) -> list[tuple[str, str]]:
        """(name, source) of every registered plugin."""
        return [(self.pm.get_name(p), describe(self.pm, p)) for p in self.pm.get_plugins()]


@functools.cache
def registry() -> Registry:
    """The process-wide registry (one entry-point scan per process, also in Ray workers)."""
    return Registry(new_plugin_manager())
