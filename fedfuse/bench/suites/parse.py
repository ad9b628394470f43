"""Suites: declarative TOML files that expand into a matrix of cells.

Format 1::

    format = 1
    [suite]
    name = "smoke"
    version = "1"
    [matrix]
    datasets = ["digits"]           # or [{ name = "image-folder", path = "...", size = 32 }]
    partitioners = ["iid"]          # or [{ name = "dirichlet", alpha = 0.3 }]
    seeds = [0, 1]
    clients = 2
    rounds = 2
    [[protocols]]
    name = "fedavg"                 # label = "..." names a second entry of one protocol
    config = { local_steps = 20 }

Every key is checked before anything runs; errors name the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fedfuse.bench.costs.hardware import DEFAULT_ASSIGNMENT
from fedfuse.bench.suites.cells import DEFAULT_EVALUATION, DEFAULT_MIA_SAMPLES
from fedfuse.plugins.config import ConfigError, build_config
from fedfuse.toolkit.seeding import stable_hash

FORMAT = 1
TOP_LEVEL = {"format", "suite", "track", "matrix", "protocols", "profiles", "profile_files", "devices", "networks",
             "resources"}
PROFILE_KINDS = ("devices", "networks")


@dataclass
class SuiteHeader:
    name: str
    version: str
    description: str = ""


#: a track's possible ranking metrics: the harness's quality figures that rank models (docs/metrics.md;
#: precision and density rise under blur and noise at these sizes), each client's or the population's
RANKABLE = tuple(f"{scope}{m}" for scope in ("", "pop_") for m in ("fid", "kid", "recall", "coverage"))


@dataclass
class Track:
    """A suite's ``[track]`` table: it makes the suite a track, a closed task that binds every
    entrant to one compute budget (docs/tracks.md). ``budget_steps`` optimizer steps of
    ``budget_batch`` images, clients', server's and pre-training's together; a cell that
    processes more is *over budget* and not ranked. Entrants tune on ``tuning_seeds``
    (``fedfuse run TRACK --tuning``) and report on the matrix's seeds. ``dp_epsilon`` > 0 is a
    privacy budget every entrant must meet: a cell without DP, or whose ε at ``dp_delta``
    exceeds it, is *over its DP budget* and not ranked (docs/privacy.md)."""

    primary: str = "fid"  # the ranking metric: one of RANKABLE (its MetricSpec gives the direction)
    conditional: bool = False  # the task asks for class-conditional generation: every entry generates the asked classes
    budget_steps: int = 0
    budget_batch: int = 64
    tuning_seeds: list[int] = field(default_factory=list)
    dp_epsilon: float = 0.0  # > 0: the DP budget entrants must meet, at dp_delta
    dp_delta: float = 1e-5

    def __post_init__(self):
        if self.primary not in RANKABLE:
            raise ValueError(f"primary must be one of {', '.join(RANKABLE)} (the harness's quality figures that "
                             f"rank models: client quality, or pop_ for the population's), got {self.primary!r}")
        if self.budget_steps < 1 or self.budget_batch < 1:
            raise ValueError("budget_steps and budget_batch must be >= 1")
        if self.dp_epsilon < 0 or not 0 < self.dp_delta < 1:
            raise ValueError(f"dp_epsilon must be >= 0 (0: no DP budget) and dp_delta in (0, 1), got "
                             f"{self.dp_epsilon} and {self.dp_delta}")
        if len(set(self.tuning_seeds)) != len(self.tuning_seeds) or any(s < 0 for s in self.tuning_seeds):
            raise ValueError(f"tuning_seeds must be distinct and >= 0, got {self.tuning_seeds}")

    @property
    def budget(self) -> int:
        """The budget in training images (optimizer steps x batch size)."""
        return self.budget_steps * self.budget_batch

    @property
    def dp_budget(self) -> dict:
        """The DP budget a cell carries ({} where the track sets none)."""
        return {"epsilon": self.dp_epsilon, "delta": self.dp_delta} if self.dp_epsilon else {}


@dataclass
class Matrix:
    datasets: list[Any]
    seeds: list[int]
    partitioners: list[Any] = field(default_factory=lambda: ["iid"])
    clients: int = 2
    rounds: int = 1
    samples: int = DEFAULT_EVALUATION["samples"]  # generated images per cell for FID & co.
    sample_steps: int = DEFAULT_EVALUATION["sample_steps"]
    sampler: Literal["ddim", "ddpm"] = DEFAULT_EVALUATION["sampler"]
    # auto: the dataset's feature net for shipped data; for a user's folder the Inception space
    # where its weights are installed (an auto-trained net on a few labels may not separate models)
    feature_space: Literal["auto", "featnet", "inception"] = "auto"
    # a malformed client reply (wrong shape, NaN, oversize, bad num-examples): fail the cell, or
    # leave that client out of the round and record it (see docs/reliability.md)
    bad_replies: Literal["fail", "drop"] = "fail"
    # a returned model may move at most this many times the sent model's norm; 0: the protocol's
    # own bound (ProtocolSpec.max_update_ratio, 100 unless it says otherwise)
    max_update_ratio: float = 0.0
    # > 0: a client whose simulated T_down + T_cmp + T_up in a round exceeds this many seconds
    # misses it (its update is left out; its energy until the deadline is spent); 0: no deadline
    deadline_s: float = 0.0
    # clients taking part in each round: a fraction of `clients` (float, 1.0 = all) or a count
    # (int); drawn per round from the cell's seed
    participation: int | float = 1.0
    # time- and energy-to-quality: e.g. { fid = 40 }; the harness scores target_samples images
    # every eval_every rounds (where the protocol offers its model) and records when it is met
    target: dict = field(default_factory=dict)
    eval_every: int = 1
    target_samples: int = 256
    # membership inference: the clients' private images attacked, and as many held-out ones
    mia_samples: int = DEFAULT_MIA_SAMPLES

    def __post_init__(self):
        if self.clients < 1 or self.rounds < 1:
            raise ValueError("clients and rounds must be >= 1")
        if self.clients > MAX_CLIENTS or self.rounds > MAX_ROUNDS:
            raise ValueError(f"clients must be at most {MAX_CLIENTS:,} and rounds at most {MAX_ROUNDS:,} (got "
                             f"{self.clients:,} and {self.rounds:,}): larger is a typo, not a study this machine runs")
        if set(self.target) - {"fid"} or any(not isinstance(v, (int, float)) or v <= 0 for v in self.target.values()):
            raise ValueError(f"target must be {{ fid = <a number > 0> }}, got {self.target}")
        if not participation_ok(self.participation, self.clients):
            raise ValueError(f"participation must be a fraction in (0, 1] or a count in 1..clients ({self.clients}), "
                             f"got {self.participation!r}")
        if not isinstance(self.deadline_s, (int, float)) or self.deadline_s < 0:
            raise ValueError(f"deadline_s must be a number of seconds >= 0 (0: none), got {self.deadline_s!r}")
        if self.eval_every < 1 or self.target_samples < 16:
            raise ValueError("eval_every must be >= 1 and target_samples >= 16")
        if self.samples < 16 or self.sample_steps < 1 or self.mia_samples < 16:
            raise ValueError("samples and mia_samples must be >= 16, and sample_steps >= 1")
        if not self.datasets or not self.seeds:
            raise ValueError("datasets and seeds must not be empty")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0 or max(self.seeds) >= 2**63:
            raise ValueError(f"seeds must be distinct, >= 0 and < 2**63, got {self.seeds}")
        if not isinstance(self.max_update_ratio, (int, float)) or self.max_update_ratio < 0:
            raise ValueError(f"max_update_ratio must be a number >= 0 (0: the protocol's), got {self.max_update_ratio!r}")


def participation_ok(value, clients: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 1 <= value <= clients if isinstance(value, int) else 0.0 < value <= 1.0


@dataclass
class ProfileEntry:
    """Who runs on what: ``device``/``network`` is one profile name for all clients, a mix
    ``{ name = share }`` (drawn with the seed), or a per-client list."""

    name: str
    device: Any
    network: Any
    server: str = DEFAULT_ASSIGNMENT["server"]
    availability: dict = field(default_factory=dict)  # who is online per round (costs/availability.py)


@dataclass
class ProtocolEntry:
    name: str
    label: str = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    path: Path
    header: SuiteHeader
    matrix: Matrix
    protocols: list[ProtocolEntry]
    text: str
    profiles: list[dict] = field(default_factory=lambda: [dict(DEFAULT_ASSIGNMENT)])
    overrides: tuple[str, ...] = ()
    resources: dict = field(default_factory=dict)  # [resources]: where cells run (toolkit.device.Resources)
    track: Track | None = None  # [track]: the suite is a track (one task, one budget)

    @property
    def digest(self) -> str:
        """Hash of the study and any --set overrides: a closed track is a shipped suite run
        unmodified (--only selects cells and keeps it closed; --set opens it)."""
        return study_digest(self.text) if not self.overrides else stable_hash([study_digest(self.text), *self.overrides])


def study_digest(text: str) -> str:
    """What a suite file asks for, without its comments and ``[suite] description``: writing a
    measured wall time into a suite's header does not reopen the results it describes. A track's
    digest is its task's: the entries (``[[protocols]]``) are the entrants' own, so an outside
    plugin's entry (``--entry``) is ranked in the same closed track as the built-ins."""
    doc = tomllib.loads(text)
    doc.get("suite", {}).pop("description", None)
    if "track" in doc:
        doc.pop("protocols", None)
    return stable_hash(doc)


def shipped_suites() -> dict[str, Path]:
    folder = resources.files("fedfuse.bench.suites")
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def resolve_suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_suites()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise ConfigError(
        f"no suite file '{name_or_path}' and no shipped suite of that name; "
        f"shipped suites: {', '.join(sorted(shipped))}"
    )


def load_suite(name_or_path: str, overrides: list[str] = (), resources: dict | None = None,
               tuning: bool = False, entry: str | None = None) -> Suite:
    """The suite, ``overrides`` (``--set``) applied; ``tuning``: a track on its tuning seeds;
    ``entry``: a file of ``[[protocols]]`` run on a track's task instead of the track's own."""
    path = resolve_suite_path(name_or_path)
    text = path.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    check_tuning_seeds(doc, path, text)  # the file's own seeds, before --tuning replaces them
    if entry:
        doc["protocols"] = entry_protocols(Path(entry), doc, path)
    if tuning:
        overrides = [*overrides, f"seeds={tuning_seeds(doc, path)}"]
    doc = apply_overrides(doc, overrides)
    check_finite(doc, str(path))
    suite = parse_suite(doc, path, text)
    suite.overrides = tuple(overrides)
    if resources:  # `fedfuse run --accelerator ...`: the system, not the study (the digest stays)
        suite.resources = checked_resources({**suite.resources, **resources}, "command line")
    return suite


def check_finite(value: Any, at: str) -> None:
    """NaN and inf are valid TOML but no setting means them: refused wherever a number is read."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{at}: {value} is not a number fedfuse can use; give a finite value")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{at}: {key}" if ": " not in at else f"{at}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{at}[{i}]")


def entry_protocols(entry: Path, doc: dict, path: Path) -> list[dict]:
    """``--entry FILE``: an entrant's ``[[protocols]]`` for a track (nothing else: the task is the track's)."""
    if "track" not in doc:
        raise ConfigError(f"{path}: --entry needs a track (a suite with a [track] table); this suite has none")
    if not entry.is_file():
        raise ConfigError(f"--entry {entry}: no such file")
    table = read_toml(entry)
    if set(table) != {"protocols"}:
        raise ConfigError(f"{entry}: an entry file holds [[protocols]] tables only (the task is the track's); "
                          f"found {', '.join(sorted(set(table) - {'protocols'})) or 'no [[protocols]]'}")
    return table["protocols"]


def check_tuning_seeds(doc: dict, path: Path, text: str) -> None:
    tuning, seeds = doc.get("track", {}).get("tuning_seeds", []), doc.get("matrix", {}).get("seeds", [])
    whole = [s for s in (tuning, seeds) if isinstance(s, list) and all(isinstance(x, int) for x in s)]
    if len(whole) == 2 and set(tuning) & set(seeds):  # other types: the matrix's own check says what is wrong
        raise ConfigError(f"{where(path, text, 'tuning_seeds')}: tuning_seeds {tuning} overlap the evaluation seeds "
                          f"{seeds}: tune on seeds that are never reported")


def tuning_seeds(doc: dict, path: Path) -> list[int]:
    """``--tuning``: the track's tuning seeds (the results are then an open track's: tuning only)."""
    seeds = doc.get("track", {}).get("tuning_seeds")
    if not seeds:
        raise ConfigError(f"{path}: --tuning needs a [track] with tuning_seeds; this suite has none")
    return list(seeds)


def checked_resources(table: dict, at: str) -> dict:
    from fedfuse.toolkit.device import Resources

    return dataclasses.asdict(build_config(Resources, table, at))


def parse_suite(doc: dict, path: Path, text: str) -> Suite:
    unknown = set(doc) - TOP_LEVEL
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where(path, text, key)}: unknown top-level key '{key}'; "
                          f"allowed: {', '.join(sorted(TOP_LEVEL))}")
    if doc.get("format") != FORMAT:
        raise ConfigError(f"{where(path, text, 'format')}: 'format' must be {FORMAT}, got {doc.get('format')!r}")
    header = build_config(SuiteHeader, doc.get("suite", {}), f"{where(path, text, '[suite]')} [suite]")
    matrix = build_config(Matrix, doc.get("matrix", {}), f"{where(path, text, '[matrix]')} [matrix]")
    protocols = [
        build_config(ProtocolEntry, entry, f"{where(path, text, '[[protocols]]', i)} protocols[{i}]")
        for i, entry in enumerate(doc.get("protocols", []))
    ]
    if not protocols:
        raise ConfigError(f"{path}: the suite lists no [[protocols]]")
    profiles = [profile_assignment(entry, path, text, i) for i, entry in enumerate(doc.get("profiles", []))]
    inline = inline_profiles(doc, path, text)
    profiles = [with_inline(p, inline) for p in profiles] or [dict(DEFAULT_ASSIGNMENT)]
    resources = checked_resources(doc.get("resources", {}), f"{where(path, text, '[resources]')} [resources]")
    track = build_config(Track, doc["track"], f"{where(path, text, '[track]')} [track]") if "track" in doc else None
    return Suite(path, header, matrix, protocols, text, profiles, resources=resources, track=track)


def profile_assignment(entry: dict, path: Path, text: str, i: int) -> dict:
    """A [[profiles]] entry as a cell's assignment; ``availability`` checked (a trace file read
    in) and kept only when given, so that cells without one keep their ids."""
    from fedfuse.bench.costs.availability import checked

    at = f"{where(path, text, '[[profiles]]', i)} profiles[{i}]"
    assignment = dataclasses.asdict(build_config(ProfileEntry, entry, at))
    spec = assignment.pop("availability")
    if spec:
        try:
            assignment["availability"] = checked(spec, path.parent)
        except ValueError as err:
            raise ConfigError(f"{at}: {err}") from None
    return assignment


def inline_profiles(doc: dict, path: Path, text: str) -> dict:
    """The suite's own [devices.NAME] and [networks.NAME] tables, plus those of the files its
    ``profile_files`` names (relative to the suite; e.g. written by ``fedfuse profile measure``).
    A name defined twice is an error: which definition a cell used would be unclear."""
    own = {kind: doc[kind] for kind in PROFILE_KINDS if kind in doc}
    _check_tables(own, lambda kind: where(path, text, f"[[{kind}]]") if isinstance(own[kind], list) else path)
    inline = {kind: dict(table) for kind, table in own.items()}
    files = doc.get("profile_files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{where(path, text, 'profile_files')}: profile_files must be a list of paths")
    for name in files:
        file = path.parent / name
        for kind, table in read_profile_file(file, where(path, text, "profile_files")).items():
            if twice := sorted(set(table) & set(inline.get(kind, {}))):
                raise ConfigError(f"{file}: {kind} {', '.join(twice)} defined again (in the suite or another file)")
            inline.setdefault(kind, {}).update(table)
    return inline


def read_toml(file: Path) -> dict:
    """A TOML file's table; a syntax error is the user's, naming the file."""
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: not valid TOML: {err}") from None


def read_profile_file(file: Path, at: str) -> dict:
    """A profile file: [devices.NAME] and [networks.NAME] tables only, as inline in a suite."""
    if not file.is_file():
        raise ConfigError(f"{at}: profile file {file} not found (paths are relative to the suite file)")
    doc = read_toml(file)
    check_finite(doc, str(file))
    if unknown := sorted(set(doc) - set(PROFILE_KINDS)):
        raise ConfigError(f"{file}: unknown key '{unknown[0]}'; a profile file holds [devices.NAME] and "
                          "[networks.NAME] tables only")
    _check_tables(doc, lambda kind: file)
    return doc


def _check_tables(tables: dict, at) -> None:
    for kind, table in tables.items():
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise ConfigError(f"{at(kind)}: inline {kind} are tables named by the profile, e.g. "
                              f"[{kind}.my-{kind[:-1]}], not [[{kind}]]")


def with_inline(assignment: dict, inline: dict) -> dict:
    """The assignment plus the suite's inline profiles it names (so a cell is self-contained)."""
    names = {*_names(assignment["device"]), *_names(assignment["network"]), assignment["server"]}
    used = {kind: {n: v for n, v in table.items() if n in names} for kind, table in inline.items()}
    used = {kind: table for kind, table in used.items() if table}
    return {**assignment, "inline": used} if used else assignment


def _names(choice) -> list[str]:
    return [choice] if isinstance(choice, str) else list(choice)


def where(path: Path, text: str, key: str, occurrence: int = 0) -> str:
    """'file:line' of the ``occurrence``-th line that defines ``key`` (a table header or ``key =``)."""
    pattern = re.escape(key) if key.startswith("[") else rf"{re.escape(key)}\s*="
    hits = [n for n, line in enumerate(text.splitlines(), 1) if re.match(rf"\s*{pattern}", line)]
    return f"{path}:{hits[occurrence]}" if occurrence < len(hits) else str(path)


def where_in(path: Path, text: str, header: str, occurrence: int, key: str) -> str:
    """'file:line' of ``key =`` inside the ``occurrence``-th ``header`` table (its header line
    if the key is not written there, e.g. it came from --set)."""
    lines, at = text.splitlines(), where(path, text, header, occurrence)
    start = int(at.rsplit(":", 1)[1]) if ":" in at.removeprefix(str(path)) else None
    for n in range(start or len(lines), len(lines)):
        if lines[n].lstrip().startswith("["):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[n]):
            return f"{path}:{n + 1}"
    return at


# --- --set KEY=VALUE ---------------------------------------------------------------------

MAX_CLIENTS = 1_000_000  # registered clients: cross-device studies use 1,000; the scaling benchmark 10,000
MAX_ROUNDS = 100_000
MATRIX_KEYS = {f.name for f in dataclasses.fields(Matrix)}


def apply_overrides(doc: dict, overrides: list[str]) -> dict:
    """``rounds=3`` sets a matrix key; ``<protocol name or label>.<key>=v`` a config key."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE")
        value = parse_value(raw)
        if key in MATRIX_KEYS:
            doc.setdefault("matrix", {})[key] = value
        else:
            _override_protocol(doc, key, value, item)
    return doc


def parse_value(raw: str) -> Any:
    """A TOML value (``3``, ``0.1``, ``[0, 1]``, ``true``); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _override_protocol(doc: dict, key: str, value: Any, item: str) -> None:
    target, _, field_name = key.partition(".")
    entries = [e for e in doc.get("protocols", []) if target in (e.get("name"), e.get("label"))]
    if not field_name or not entries:
        raise ConfigError(
            f"--set {item}: unknown key '{key}'; use one of {', '.join(sorted(MATRIX_KEYS))} "
            "or <protocol>.<config key>"
        )
    for entry in entries:
        entry.setdefault("config", {})[field_name] = value


# --- expansion ---------------------------------------------------------------------------

def named_entries(items: list, key: str) -> list[tuple[str, dict]]:
    """Matrix entries are a name, or a table ``{ name = ..., arg = value, ... }``."""
    out = []
    for item in items:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            out.append((item["name"], {k: v for k, v in item.items() if k != "name"}))
        else:
            raise ConfigError(f"[matrix] {key}: expected a name or {{ name = ..., arg = ... }}, got {item!r}")
    return out
