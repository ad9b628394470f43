"""Load plugins from the ``fedfuse`` entry-point group and index what they provide."""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
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
    "studies": "fedfuse_add_studies",
}


def singular(kind: str) -> str:
    """'protocols' -> 'protocol', 'studies' -> 'study': for messages."""
    return kind[:-3] + "y" if kind.endswith("ies") else kind[:-1]


class PluginError(Exception):
    """A plugin is broken or two plugins collide. The message names the plugins."""


@dataclass(frozen=True)
class Entry:
    """One registered thing and the plugin it came from."""

    spec: Any
    plugin: str  # where it comes from, for messages: "'name' (distribution d x.y)"
    plugin_name: str = ""  # the plugin's registered name


class _PluginManager(pluggy.PluginManager):
    """Treats every ``fedfuse_*`` function as a hook implementation, decorated or not,
    so that a misspelt hook name is caught instead of being silently ignored. Keeps the
    plugins that failed to load (``broken``: name -> why), so one bad plugin does not take
    the others down."""

    def __init__(self, project: str):
        super().__init__(project)
        self.broken: dict[str, str] = {}
        self.dists: dict[int, importlib.metadata.Distribution] = {}

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("fedfuse_") and callable(getattr(plugin, name, None)):
            opts = {}
        return opts


def unknown_hooks(plugin) -> str | None:
    """'unknown hook fedfuse_add_protocol (did you mean fedfuse_add_protocols?)', or None."""
    known = [n for n in dir(hookspecs) if n.startswith("fedfuse_")]
    problems = []
    for name in (n for n in dir(plugin) if n.startswith("fedfuse_") and callable(getattr(plugin, n))):
        if name not in known:
            guess = difflib.get_close_matches(name, known, n=1)
            problems.append(f"unknown hook '{name}'" + (f" (did you mean '{guess[0]}'?)" if guess else ""))
    return "; ".join(problems) or None


def load_entry_points(pm: _PluginManager) -> None:
    """Register every plugin of the entry-point group; one that fails to import or declares
    an unknown or malformed hook is kept in ``pm.broken`` with the reason, and skipped."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            if problem := unknown_hooks(plugin):
                raise PluginError(problem)
            pm.register(plugin, name=ep.name)
            pm.dists[id(plugin)] = ep.dist
        except Exception as err:  # noqa: BLE001 — whatever a plugin raises, the others still load
            where = f"distribution {ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
            pm.broken[ep.name] = f"({where}): {type(err).__name__}: {err}"


def new_plugin_manager(entry_points: bool = True) -> pluggy.PluginManager:
    pm = _PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if entry_points:
        load_entry_points(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise PluginError(f"plugin {describe(pm, err.plugin)}: {err}") from None
    return pm


def describe(pm: pluggy.PluginManager, plugin: object) -> str:
    """'name' (from distribution d x.y) — where a plugin comes from, for messages."""
    name = pm.get_name(plugin) or repr(plugin)
    dist = getattr(pm, "dists", {}).get(id(plugin))
    if dist is not None:
        return f"'{name}' (distribution {dist.name} {dist.version})"
    return f"'{name}' ({getattr(plugin, '__name__', type(plugin).__name__)})"


def collect(pm: pluggy.PluginManager, kind: str) -> dict[str, Entry]:
    """Call one collect hook on every plugin; index the specs by name, refusing duplicates."""
    hook = getattr(pm.hook, KINDS[kind])
    entries: dict[str, Entry] = {}
    for impl in reversed(hook.get_hookimpls()):  # registration order
        source = describe(pm, impl.plugin)
        try:
            specs = list(impl.function() or [])
        except Exception as err:  # noqa: BLE001 — reported with the plugin, the others still count
            getattr(pm, "broken", {})[pm.get_name(impl.plugin)] = f"{source}: {KINDS[kind]} raised {type(err).__name__}: {err}"
            continue
        for spec in specs:
            if spec.name in entries:
                first = entries[spec.name].plugin
                raise PluginError(
                    f"{singular(kind)} '{spec.name}' is registered twice: by plugin {first} "
                    f"and by plugin {source}"
                )
            entries[spec.name] = Entry(spec, source, pm.get_name(impl.plugin))
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
            broken = "".join(f"\n  plugin '{p}' failed to load {why}" for p, why in self.broken.items())
            raise PluginError(f"unknown {singular(kind)} '{name}'; available: {known}{broken}")
        return entries[name].spec

    @property
    def broken(self) -> dict[str, str]:
        """Plugins that failed to load or whose hook raised: name -> why."""
        return getattr(self.pm, "broken", {})

    def plugins(self) -> list[tuple[str, str]]:
        """(name, source) of every registered plugin."""
        return [(self.pm.get_name(p), describe(self.pm, p)) for p in self.pm.get_plugins()]


@functools.cache
def registry() -> Registry:
    """The process-wide registry (one entry-point scan per process, also in Ray workers)."""
    return Registry(new_plugin_manager())
