"""Leaderboard: cells grouped into configurations (same suite, protocol entry, data, partition
and profile; seeds pooled), mean ± std over seeds, ranked by the track's primary metric in the
direction its MetricSpec declares, with Pareto fronts of quality against costs.

A track is *closed* when its suite is a shipped suite run unmodified (same file digest),
*open* otherwise. Feature spaces are never mixed: the track key includes it. Within a track, a
*section* holds the rows scored on one distribution (the record's ``eval_distribution``; records
written before it existed are grouped by their reference values): rows scored against different
distributions are never ranked together, and each section shows its own references.

Bound rows (a protocol whose spec says ``bound``: local-only, centralized) and rows whose
protocol moves raw images off the device (``raw_data_off_device``) are ranked and marked but
never on a Pareto front: a protocol that gives up privacy would win every front.

Quality is read beside the references every cell stores (``ref_fid_real|blur|noise``): a
configuration whose FID is more than ``NOT_LEARNED`` x the pure-noise FID is *not learned*:
listed after the ranked rows, on no Pareto front. Ranks are shared (``2=``) by configurations
whose mean ± std over seeds overlaps that of the first configuration of their group.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from fedfuse.results.record import data_of, setup_of

PRIMARY = "fid"
COSTS = ("bytes_up", "bytes_down", "client_flops", "latency_s", "energy_j")
NOT_LEARNED = 0.5  # fid / fid(pure noise) above this: the samples are closer to noise than to data
MIN_SEPARATION = 20.0  # fid(noise) / fid(real floor) below this: the feature space cannot rank models
REFERENCES = ("real", "blur", "noise")
FRONTS = (("bytes_up", "bytes"), ("energy_j", "energy"), ("client_flops", "client FLOPs"), ("mia_auc", "privacy"),
          ("dp_epsilon", "DP ε"))
LEGACY_GAP = 0.02  # older records: rows whose pure-noise references differ by more than 2 % were scored apart


@dataclass
class Row:
    track: str
    label: str
    data: str
    profile: str
    seeds: list[int] = field(default_factory=list)
    failed: int = 0
    planned: int = 0
    per_seed: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))  # metric: {seed: value}
    pareto: list[str] = field(default_factory=list)
    rank: str = ""  # "1", "2=" (shared), "" (not ranked: not learned, or no quality figure)
    systems: list[str] = field(default_factory=list)  # where its cells ran (device, precision)
    run_dirs: dict[int, str] = field(default_factory=dict)  # seed: run directory, of its ok cells
    old_version: bool = False  # cells of an older protocol version than the installed one
    superseded: bool = False  # cells of an earlier set-up of the row (a changed default or matrix)
    verified: bool = False  # some of its cells were run again by `fedfuse verify` and came out the same
    partition: str = ""  # the partitioner part of ``data``, e.g. ``dirichlet(alpha=0.3)``
    distribution: str = ""  # what its quality was scored against (``eval_distribution``)
    bound: bool = False  # a reference bound (its protocol's spec says so), not a private protocol
    protocol: str = ""  # the protocol its cells ran
    primary: str = PRIMARY  # its track's ranking metric (the track file's ``primary``)

    @property
    def values(self) -> dict[str, list[float]]:
        """{metric: its values over the ok seeds, in the order the cells were read}."""
        return {name: list(by_seed.values()) for name, by_seed in self.per_seed.items()}

    def of(self, metric: str) -> list[float]:
        """``metric``'s values over the ok seeds (without building every metric's, as ``values`` does)."""
        return list(self.per_seed.get(metric, {}).values())

    def mean(self, metric: str) -> float:
        v = self.of(metric)
        return float(np.mean(v)) if v else math.nan

    def std(self, metric: str) -> float:
        v = self.of(metric)
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    short: bool = False  # a failed cell, or fewer seeds than its section's current rows (``rank``)

    @property
    def incomplete(self) -> bool:
        """Fewer ok seeds than its suite asks for, or a failed cell (shown as ``n*``)."""
        return self.failed > 0 or len(self.seeds) < self.planned

    @property
    def named(self) -> str:
        """Its label for a claim's line: with its seed count where it is incomplete (a failed
        cell, or fewer seeds than its suite asks for)."""
        if not self.incomplete:
            return self.label
        return f"{self.label} [{len(self.seeds)} of {self.planned or len(self.seeds) + self.failed} seeds]"

    @property
    def n_shown(self) -> str:
        """Its seed count as tables show it: ``2*`` for an incomplete row."""
        return f"{len(self.seeds)}{'*' if self.incomplete else ''}"

    @property
    def not_learned(self) -> bool:
        return self.mean("fid_vs_noise") > NOT_LEARNED

    @property
    def over_budget(self) -> bool:
        """Some cell processed more training images than its track's budget."""
        return self.mean("over_budget") > 0

    @property
    def over_dp_budget(self) -> bool:
        """Some cell did not meet its track's DP budget (no DP, or a larger ε)."""
        return self.mean("over_dp_budget") > 0

    @property
    def shown_label(self) -> str:
        """The label as tables show it: ✓ after a verified row's."""
        return f"{self.label} ✓" if self.verified else self.label

    @property
    def outdated(self) -> bool:
        """Not the current result of its configuration: an older protocol version or set-up."""
        return self.old_version or self.superseded

    @property
    def place(self) -> str:
        """What the rank column shows: the rank, or why there is none."""
        why = (("older version", self.old_version), ("superseded", self.superseded), ("over budget", self.over_budget),
               ("over DP budget", self.over_dp_budget), ("not learned", self.not_learned), ("incomplete", self.short))
        return self.rank or next((w for w, yes in why if yes), "–")

    @property
    def raw_data(self) -> bool:
        """Its protocol moved raw images off the device (e.g. split diffusion at c = 1)."""
        return self.mean("raw_data_off_device") > 0

    @property
    def on_fronts(self) -> bool:
        """Bounds and rows that move raw data are shown and ranked, never on a Pareto front."""
        return self.ranked and not self.bound and not self.raw_data

    @property
    def section(self) -> str:
        """The track and the distribution its rows were scored on: the unit of ranking."""
        by = f", ranked by {self.primary}" if self.primary != PRIMARY else ""
        return f"{self.track}{by} — scored on {self.distribution}" if self.distribution else f"{self.track}{by}"

    @property
    def ranked(self) -> bool:
        return not math.isnan(self.mean(self.primary)) and not (self.not_learned or self.outdated or self.over_budget
                                                           or self.over_dp_budget or self.short)


def track_of(record: dict, shipped_digests: dict[str, str]) -> str:
    closed = shipped_digests.get(record["suite"]) == record["suite_digest"]
    space = record["evaluation"].get("feature_space", "featnet")
    return f"{record['suite']} v{record['suite_version']} ({'closed' if closed else 'open'}, {space})"


def is_outdated(record: dict, versions: dict[str, str]) -> bool:
    """The cell ran an older version of its protocol than the installed one (where known)."""
    return versions.get(record.get("protocol")) not in (None, record.get("protocol_version"))


def label_of(record: dict, versions: dict[str, str], earlier_setup: str = "") -> str:
    """A row's label: the cell's, with the protocol's version added where it is not the
    installed one, so that results of an older version are never pooled with the current; or
    with its set-up (``earlier_setup``, ``setup_of``) where a newer cell of its row ran another."""
    if is_outdated(record, versions):
        return f"{record['label']} [{record['protocol']} v{record['protocol_version']}]"
    if earlier_setup:
        return f"{record['label']} [earlier set-up {earlier_setup}]"
    return record["label"]


def row_key(record: dict, track: str) -> tuple:
    return track, record["label"], data_of(record), record["profile"]


def newest_setups(records: list[dict], tracks: list[str], setups: list[str], versions: dict[str, str]) -> dict[tuple, str]:
    """{row key: the set-up of that row's last-ended ``ok`` cell of the installed protocol
    version (any cell where none is ok)}. A suite gives a row one set-up; a store resumed after a
    protocol default or the suite's matrix changed holds two."""
    newest: dict[tuple, tuple] = {}
    for r, track, setup in zip(records, tracks, setups):
        if is_outdated(r, versions):
            continue
        key, when = row_key(r, track), (r["status"] == "ok", r.get("ended") or r.get("started") or 0.0)
        if key not in newest or when >= newest[key][0]:
            newest[key] = (when, setup)
    return {key: setup for key, (_, setup) in newest.items()}


def group(records: list[dict], shipped_digests: dict[str, str], planned_seeds: dict[str, int] | None = None,
          versions: dict[str, str] | None = None, bounds: set[str] | frozenset = frozenset()) -> list[Row]:
    """Records pooled into rows (seeds of one configuration); ``bounds``: the protocols whose
    spec declares them a reference bound."""
    rows: dict[tuple, Row] = {}
    versions = versions or {}
    records = [r for r in records if r["status"] != "running"]  # in progress (or killed): not a result yet
    tracks, setups = [track_of(r, shipped_digests) for r in records], [setup_of(r) for r in records]
    newest = newest_setups(records, tracks, setups, versions)
    for r, track, setup in zip(records, tracks, setups):
        earlier = newest.get(row_key(r, track), setup) != setup
        key = (track, label_of(r, versions, setup if earlier else ""), data_of(r), r["profile"])
        row = rows.setdefault(key, Row(*key))
        row.old_version, row.superseded, row.partition = is_outdated(r, versions), earlier, r["partitioner"]
        row.planned = (planned_seeds or {}).get(r["suite"], 0)
        row.protocol = r.get("protocol", "")
        row.verified = row.verified or bool(r.get("verified"))
        row.bound = row.protocol in bounds
        if r["status"] == "ok":
            add_result(row, r)
        else:  # an interrupted cell is a seed not yet run, a failed one a result
            row.failed += r["status"] == "failed"
    rows = list(rows.values())
    name_legacy_distributions(rows)
    return rows


def add_result(row: Row, r: dict) -> None:
    """One ok cell's seed and figures into its row."""
    forget_seed(row, r["seed"])  # run twice (a suite edited without a new version): its newest cell counts
    row.seeds.append(r["seed"])
    if r.get("run_dir"):
        row.run_dirs[r["seed"]] = r["run_dir"]
    system = r["metrics"].get("system")
    if system and system not in row.systems:
        row.systems.append(system)
    row.primary = r["evaluation"].get("primary", PRIMARY)
    # the distribution the ranking metric was scored on: the population's for a pop_ metric
    scored_on = "pop_eval_distribution" if row.primary.startswith("pop_") else "eval_distribution"
    row.distribution = row.distribution or r["metrics"].get(scored_on, "")
    for name, value in r["metrics"].items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            row.per_seed[name][r["seed"]] = float(value)


def forget_seed(row: Row, seed: int) -> None:
    if seed not in row.seeds:
        return
    row.seeds.remove(seed)
    for name in list(row.per_seed):
        row.per_seed[name].pop(seed, None)
        if not row.per_seed[name]:
            del row.per_seed[name]


def name_legacy_distributions(rows: list[Row]) -> None:
    """Rows of records without ``eval_distribution`` (written before the harness scored every
    protocol) get one from their pure-noise reference: within a track, rows whose references
    differ by more than ``LEGACY_GAP`` were scored against different distributions."""
    for track in {r.track for r in rows}:
        legacy = sorted((r for r in rows if r.track == track and not r.distribution
                         and not math.isnan(r.mean("ref_fid_noise"))), key=lambda r: r.mean("ref_fid_noise"))
        clusters: list[list[Row]] = []
        for r in legacy:
            if clusters and r.mean("ref_fid_noise") <= clusters[-1][0].mean("ref_fid_noise") * (1 + LEGACY_GAP):
                clusters[-1].append(r)
            else:
                clusters.append([r])
        for members in clusters if len(clusters) > 1 else []:
            noise = float(np.mean([r.mean("ref_fid_noise") for r in members]))
            for r in members:
                r.distribution = f"an older evaluation (pure-noise FID {noise:.4g})"


def rank(rows: list[Row], specs: dict) -> list[Row]:
    """Per section (track and scored distribution): ranked rows best first by the primary metric
    in its spec's direction, with shared ranks; then the rows that are not ranked (not learned,
    superseded, short of seeds, or without a quality figure)."""
    out = []
    for section in sorted({r.section for r in rows}):
        members = [r for r in rows if r.section == section]
        mark_short(members)
        metric = members[0].primary  # one track's: the track key holds its suite's digest
        sign = -1 if specs[metric].higher_is_better else 1
        ranked = sorted((r for r in members if r.ranked), key=lambda r: sign * r.mean(metric))
        share_ranks(ranked)
        out += ranked + sorted((r for r in members if not r.ranked), key=lambda r: np.nan_to_num(r.mean(metric), nan=np.inf))
    return out


def mark_short(members: list[Row]) -> None:
    """Rows ranked together ran the same seeds: a row with a failed cell, or fewer seeds than
    the section's most (among its current rows), is shown but not ranked (a mean over the seeds that survived would
    favour a protocol that fails on its hardest seeds). A run cut short, every row on the same
    fewer seeds, still ranks them all."""
    most = max((len(r.seeds) for r in members if not r.outdated), default=0)  # an earlier set-up sets no bar
    for r in members:
        r.short = r.failed > 0 or len(r.seeds) < most


def share_ranks(ranked: list[Row]) -> None:
    """Rank numbers, shared within a group: a row joins the group of the row that opened it
    when their mean ± std intervals overlap (configurations the seeds cannot tell apart)."""
    leader, groups = None, []
    for i, r in enumerate(ranked):
        if leader is None or not overlaps(leader, r):
            leader = r
            groups.append([i])
        else:
            groups[-1].append(i)
    for members in groups:
        label = f"{members[0] + 1}" + ("=" if len(members) > 1 else "")
        for i in members:
            ranked[i].rank = label


def overlaps(a: Row, b: Row, metric: str = "") -> bool:
    """The seeds cannot tell a and b apart on ``metric`` (their ranking metric by default):
    mean ± std intervals overlap."""
    metric = metric or a.primary
    return abs(a.mean(metric) - b.mean(metric)) <= a.std(metric) + b.std(metric)


def versus(a: Row, b: Row, metric: str) -> str:
    """Where a's ``metric`` stands against b's: "below", "above", or "not told apart from"
    (within the seeds' spread, ``overlaps``); "not measured against" where either has no value."""
    if math.isnan(a.mean(metric)) or math.isnan(b.mean(metric)):
        return "not measured against"
    if overlaps(a, b, metric):
        return "not told apart from"
    return "below" if a.mean(metric) < b.mean(metric) else "above"


LEVEL = 1e-3  # two paired values within 0.1 % of each other are level: rounding, not a difference


def paired(a: Row, b: Row, metric: str) -> list[tuple[float, float]]:
    """(a's, b's) ``metric`` on each seed both rows have."""
    mine, theirs = a.per_seed.get(metric, {}), b.per_seed.get(metric, {})
    return [(mine[s], theirs[s]) for s in sorted(mine.keys() & theirs.keys())]


def level(x: float, y: float) -> bool:
    return abs(x - y) <= LEVEL * max(abs(x), abs(y))


def seeds_below(a: Row, b: Row, metric: str) -> tuple[int, int]:
    """(k, n): on k of the n seeds both rows have, a's ``metric`` is below b's (by more than
    ``LEVEL``). Rows of one suite share each seed's data, hardware and evaluation images, so this
    paired count shows what a spread driven by the seeds themselves hides; verdicts still use
    ``versus``."""
    pairs = paired(a, b, metric)
    return sum(x < y and not level(x, y) for x, y in pairs), len(pairs)


def paired_count(a: Row, b: Row, metric: str, word: str = "below") -> str:
    """``seeds_below`` as a claim's line says it: "below on k of n seeds" (``word`` for
    "below", e.g. "less" for energy), and ", level on m" where m seeds are within ``LEVEL``."""
    k, n = seeds_below(a, b, metric)
    tied = sum(level(x, y) for x, y in paired(a, b, metric))
    return f"{word} on {k} of {n} seeds" + (f", level on {tied}" if tied else "")


def reference_rows(rows: list[Row]) -> dict[str, dict[str, tuple[float, float]]]:
    """{data: {reference: (FID, recall)}} of one track's rows (the same code at the same n
    gives the same references; a mean where rows scored against different class subsets)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for data in dict.fromkeys(r.data for r in rows):
        members = [r for r in rows if r.data == data and not math.isnan(r.mean("ref_fid_noise"))]
        if members:
            out[data] = {ref: (float(np.mean([r.mean(f"ref_fid_{ref}") for r in members])),
                               float(np.mean([r.mean(f"ref_recall_{ref}") for r in members]))) for ref in REFERENCES}
    return out


def space_usable(refs: dict[str, tuple[float, float]]) -> bool:
    """A feature space separates models only if pure noise scores far above the real floor."""
    return refs["noise"][0] >= MIN_SEPARATION * max(refs["real"][0], 1e-9)


def pareto_front(points: list[tuple[float, float]], quality_higher_better: bool, cost_higher_better: bool) -> list[int]:
    """Indices of the non-dominated points (quality, cost): none is at least as good in both
    and better in one."""
    q = [(p[0] if quality_higher_better else -p[0], p[1] if cost_higher_better else -p[1]) for p in points]
    return [i for i, a in enumerate(q)
            if not any(b[0] >= a[0] and b[1] >= a[1] and (b[0] > a[0] or b[1] > a[1]) for j, b in enumerate(q) if j != i)]


#: figures whose absence means no bound, not "unknown": the ε of a row without DP is ∞
UNBOUNDED = ("dp_epsilon",)


def mean_or_unbounded(row: Row, metric: str) -> float:
    """The row's mean; ∞ where its absence means no bound (``UNBOUNDED``)."""
    m = row.mean(metric)
    return math.inf if math.isnan(m) and metric in UNBOUNDED else m


def front_value(row: Row, cost: str) -> float:
    """A row's position on a front's cost axis; for the membership attack, its AUC's distance
    from chance (an AUC of 0.3 tells members apart as well as one of 0.7); ∞ for a row
    without DP on the ε axis."""
    return abs(row.mean(cost) - 0.5) + 0.5 if cost == "mia_auc" else mean_or_unbounded(row, cost)


def mark_fronts(rows: list[Row], specs: dict) -> None:
    for section in {r.section for r in rows}:
        members = [r for r in rows if r.section == section and r.on_fronts]
        for cost, name in FRONTS:
            if all(math.isnan(r.mean(cost)) for r in members):  # e.g. no row attacked, or none DP: no front
                continue
            # every row with a value, or with none that means ∞ (no DP), on a section's ε axis
            scored = [r for r in members if not math.isnan(mean_or_unbounded(r, cost))]
            quality = members[0].primary
            points = [(r.mean(quality), front_value(r, cost)) for r in scored]
            for i in pareto_front(points, specs[quality].higher_is_better, specs[cost].higher_is_better):
                scored[i].pareto.append(name)
