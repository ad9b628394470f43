"""Suite -> cells: the matrix expanded, every name, config and profile checked against
the registered plugins (errors name the file, the line and the key)."""

from __future__ import annotations

import itertools
from dataclasses import asdict, fields

from fedfuse.bench.metrics.dp import DpSpec
from fedfuse.bench.suites.cells import DEFAULT_EVALUATION, DEFAULT_MIA_SAMPLES, CellSpec
from fedfuse.bench.suites.parse import Matrix, Suite, named_entries, where, where_in
from fedfuse.plugins.config import ConfigError, build_config, identity
from fedfuse.plugins.manager import PluginError, Registry


def expand(suite: Suite, registry: Registry) -> list[CellSpec]:
    """The suite's cells, every name and config checked against the registered plugins."""
    cells = []
    for i, entry in enumerate(suite.protocols):
        spec = _lookup(registry, "protocols", entry.name, suite, f"protocols[{i}] name")
        at = f"{where_in(suite.path, suite.text, '[[protocols]]', i, 'config')} protocols[{i}] ('{entry.name}') config"
        config_values = dict(entry.config)
        dp = dp_table(config_values.pop("dp", None), spec, at)
        config = build_config(spec.config, config_values, at)
        check_clients(config, suite.matrix.clients, at)
        check_conditional(config, suite, at)
        if suite.matrix.participation != 1.0 and not spec.partial_participation:
            raise ConfigError(f"{where(suite.path, suite.text, 'participation')}: protocols[{i}] ('{entry.name}') "
                              f"trains every client every round; it does not support participation = "
                              f"{suite.matrix.participation!r}")
        cells += _cells_for(suite, registry, entry, spec, identity(config), dp)
    configs_by_label: dict[str, str] = {}
    for cell in cells:
        if configs_by_label.setdefault(cell.label, cell.config_hash) != cell.config_hash:
            raise ConfigError(f"{suite.path}: two protocol entries are labelled '{cell.label}' with "
                              "different configs; give each a distinct 'label'")
    return list({c.cell_id: c for c in cells}.values())  # an entry listed twice runs once


def dp_table(table, spec, at: str) -> dict:
    """An entry's ``dp = { clip, noise_multiplier[, delta] }`` checked (the harness's, not the
    protocol config's: every protocol that trains through the DP service takes the same)."""
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: key 'dp' must be a table {{ clip = C, noise_multiplier = sigma }}, got {table!r}")
    missing = sorted({"clip", "noise_multiplier"} - table.keys())
    if missing and table.keys() <= {f.name for f in fields(DpSpec)}:  # (an unknown key: build_config names it)
        raise ConfigError(f"{at} key 'dp': {' and '.join(missing)} missing; dp = {{ clip = C, noise_multiplier = sigma }}")
    dp = asdict(build_config(DpSpec, table, f"{at} key 'dp'"))
    if dp["level"] not in spec.dp:
        raise ConfigError(f"{at}: protocol '{spec.name}' does not take {dp['level']}-level DP through fedfuse's DP "
                          f"service (it takes: {', '.join(spec.dp) or 'none'}; docs/privacy.md)")
    return dp


def check_conditional(config, suite: Suite, at: str) -> None:
    """A conditional track's entries must generate the classes they are asked for: a config that
    says it does not (its ``conditional`` is False) is refused before anything runs; one that
    says nothing is checked when it deploys."""
    if suite.track is not None and suite.track.conditional and getattr(config, "conditional", None) is False:
        raise ConfigError(f"{at}: this track asks for class-conditional generation, and this config generates "
                          "unconditionally (for the built-ins: conditional = true, or condition = \"label\" for split "
                          "diffusion and its baselines)")


def check_clients(config, clients: int, at: str) -> None:
    """A protocol config may define ``check_clients(n)`` for what depends on the number of
    clients (e.g. one value per client); its ValueError becomes the user's error."""
    try:
        getattr(config, "check_clients", lambda n: None)(clients)
    except ValueError as err:
        raise ConfigError(f"{at}: {err}") from None


def _cells_for(suite, registry, entry, spec, config, dp) -> list[CellSpec]:
    m = suite.matrix
    datasets = [_check_args(registry, suite, "datasets", n, a) for n, a in named_entries(m.datasets, "datasets")]
    for i, profile in enumerate(suite.profiles):
        _check_profile(registry, suite, profile, i, m.clients)
    parts = [_check_args(registry, suite, "partitioners", n, a) for n, a in named_entries(m.partitioners, "partitioners")]
    return [
        CellSpec(
            suite=suite.header.name, suite_version=suite.header.version,
            label=entry.label or entry.name, protocol=spec.name, protocol_version=spec.version,
            config=config, dataset=dname, dataset_args=dargs, partitioner=pname, partitioner_args=pargs,
            profile=profile, clients=m.clients, rounds=m.rounds, seed=seed,
            evaluation=evaluation(m, registry.get("datasets", dname), suite.track), resources=dict(suite.resources),
            bad_replies=m.bad_replies, deadline_s=float(m.deadline_s), max_update_ratio=float(m.max_update_ratio), participation=m.participation,
            budget=suite.track.budget if suite.track else 0, dp=dp,
            dp_budget=suite.track.dp_budget if suite.track else {},
        )
        for (dname, dargs), (pname, pargs), profile, seed
        in itertools.product(datasets, parts, suite.profiles, m.seeds)
    ]


def evaluation(matrix: Matrix, dataset_spec, track=None) -> dict:
    """The cell's evaluation settings, its feature space resolved (``auto``) and the reason kept;
    ``conditional`` where a track asks for class-conditional generation."""
    out = {k: getattr(matrix, k) for k in DEFAULT_EVALUATION}
    if track is not None and track.conditional:  # only then: other cells keep their ids
        out["conditional"] = True
    if track is not None and track.primary != "fid":  # likewise
        out["primary"] = track.primary
    if matrix.target:  # only then: cells without a target keep their ids
        out.update(target=dict(matrix.target), eval_every=matrix.eval_every, target_samples=matrix.target_samples)
    if matrix.mia_samples != DEFAULT_MIA_SAMPLES:  # only then: other cells keep their ids
        out["mia_samples"] = matrix.mia_samples
    if matrix.feature_space == "auto":
        out["feature_space"], out["feature_space_reason"] = auto_space(dataset_spec)
    return out


def auto_space(dataset_spec) -> tuple[str, str]:
    from fedfuse.bench.metrics.inception import weights_path

    if dataset_spec.image_shape is not None:  # shipped data: a shipped, calibrated feature net
        return "featnet", "shipped data: its calibrated feature net (docs/metrics.md)"
    try:
        weights_path()
    except FileNotFoundError:
        return "featnet", "a user dataset, Inception weights not installed: a feature net trained on its labels"
    return "inception", "a user dataset: the standard Inception space (a net trained on a few labels may not separate models)"


def _check_profile(registry, suite, profile: dict, i: int, clients: int) -> None:
    """Every profile named exists and the assignment fits the number of clients."""
    from fedfuse.bench.costs.costing import CellHardware

    try:
        CellHardware.build(profile, clients, 0, registry)
    except (ConfigError, ValueError) as err:
        raise ConfigError(f"{where(suite.path, suite.text, '[[profiles]]', i)} profiles[{i}]: {err}") from None


def _check_args(registry, suite, kind, name, args) -> tuple[str, dict]:
    """A dataset's or partitioner's arguments: known keys only, required ones present.
    Datasets keep only the arguments given (their defaults stay the loader's); partitioners
    get their own defaults filled in (fedfuse.datasets.partition.with_defaults)."""
    from fedfuse.datasets import loading, partition

    spec = _lookup(registry, kind, name, suite, kind)
    allowed = loading.allowed_args(spec) if kind == "datasets" else partition.allowed_args(spec)
    at = where(suite.path, suite.text, kind)
    for key in args:
        if key not in allowed:
            raise ConfigError(f"{at}: {kind[:-1]} '{name}' has no argument '{key}'; allowed: {', '.join(allowed) or 'none'}")
    missing = [k for k, v in allowed.items() if v is None and k not in args]
    if missing:
        raise ConfigError(f"{at}: {kind[:-1]} '{name}' needs argument(s) {', '.join(missing)}")
    if kind == "datasets":
        return name, dict(args)
    try:
        partition.max_per_client(args)
    except ValueError as err:
        raise ConfigError(f"{at}: partitioner '{name}': {err}") from None
    return name, partition.with_defaults(spec, args)


def _lookup(registry, kind, name, suite, key):
    try:
        return registry.get(kind, name)
    except PluginError as err:
        raise ConfigError(f"{where(suite.path, suite.text, key.split()[0])}: {err}") from None
