"""The records plugins return from the ``fedfuse_add_*`` hooks.

They are plain frozen dataclasses so that a plugin author can read every field here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


def load_ref(ref: Any) -> Any:
    """Resolve a ``"package.module:attribute"`` string; other values pass through."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ProtocolSpec:
    """A collaborative-training protocol.

    ``server(grid, run)`` owns the server loop: it is handed a Flower ``Grid`` (wrapped by
    the harness so every message is counted) and a :class:`fedfuse.bench.engine.services.ServerRun`
    with the parsed config, the cell, a seeded RNG, data access and ``run.round_end(...)``.
    It returns the cell's final metrics as a dict of floats.

    ``client_app`` is the protocol's Flower ``ClientApp``. Its handlers call
    :func:`fedfuse.bench.engine.services.client_run` to get their partition, config and seeds.

    ``reply_check(sent, reply, config)`` (optional) is the schema of the protocol's own replies:
    called on every client reply with the server's message and the reply (``RecordDict`` objects) and
    the protocol config, it raises ``ValueError`` saying what is wrong. The harness already
    checks what needs no schema: finite arrays, a returned model's keys, shapes and dtypes, the
    size limit and ``num-examples`` (fedfuse/bench/engine/validation.py).

    ``partial_participation``: the server loop calls ``run.begin_round(r)`` at the start of every
    round and trains only the nodes it returns (a Flower strategy samples from the nodes the grid
    lists: build it with ``min_train_nodes = min_available_nodes = 1``, since with a profile's
    availability fewer than ``run.cell.per_round`` may be online and Flower would wait for more),
    so a suite's ``participation`` < all works;
    the harness refuses such a suite for a protocol that does not say so.

    ``max_update_ratio``: a model returned under the name the server sent it (FedAvg-style) may
    move at most this many times the sent model's norm (or 1, if that is smaller) from it; a
    larger update is the client's fault (a scaled or exploded model), named and refused before
    it is averaged in. A suite's ``max_update_ratio`` overrides it.

    ``bound``: the protocol is a reference bound rather than a private protocol (each client
    alone; every image pooled on the server). The leaderboard ranks and marks its rows and keeps
    them off the Pareto fronts.

    ``dp``: the DP levels a suite entry's ``dp = { clip, noise_multiplier, level }`` may ask
    of it. ``"record"``: every client training step on private images goes through the
    harness's DP service (``train(..., dp=run.dp_sgd(round))`` or ``fit(..., dp=...)``); a DP
    cell whose clients trained without it fails. ``"client"``: its rounds run through
    ``strategy_rounds`` with a mean aggregator, which the harness turns into DP-FedAvg, or its
    server loop passes its mean of the clients' updates through ``run.privacy.private_mean``. The
    harness refuses a level a protocol does not list (docs/privacy.md).

    How the trained clients generate is declared from the server loop (``run.deploy`` or
    ``run.deploy_model``); the harness then samples and scores every protocol by one code path
    (fedfuse.bench.engine.scoring).
    """

    name: str
    version: str
    config: type  # a dataclass; suite keys are checked against its fields
    server: Callable[..., dict[str, float]] | str  # or "module:attr", imported when a cell runs
    client_app: Any  # a flwr ClientApp, or "module:attr" (keeps `fedfuse list` light)
    summary: str = ""
    reply_check: Callable[..., None] | str | None = None  # or "module:attr"
    partial_participation: bool = False
    max_update_ratio: float = 100.0
    bound: bool = False  # a reference bound (local-only, centralized): ranked and marked, never on a Pareto front
    dp: tuple[str, ...] = ()  # the DP levels it takes: "record" (train/fit with dp=run.dp_sgd(round)), "client"

    def load_reply_check(self) -> Callable[..., None] | None:
        return load_ref(self.reply_check) if self.reply_check else None

    def load_server(self) -> Callable[..., dict[str, float]]:
        return load_ref(self.server)

    def load_client_app(self) -> Any:
        return load_ref(self.client_app)


@dataclass(frozen=True)
class DatasetSpec:
    """An image dataset. ``load(**args)`` returns a :class:`fedfuse.datasets.ImageData`.

    ``args`` maps each argument ``load`` accepts to its default (``None``: required); a suite
    passes them as ``{ name = "image-folder", path = "...", size = 32 }``. ``image_shape``
    and ``num_classes`` are ``None`` where they depend on the arguments.
    """

    name: str
    version: str
    load: Callable[..., Any]
    image_shape: tuple[int, int, int] | None  # (channels, height, width)
    num_classes: int | None
    license: str
    source: str
    summary: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionerSpec:
    """A way to split a dataset's training part across clients.

    ``build(num_partitions, seed, **args)`` returns a flwr-datasets ``Partitioner``.
    The harness hands it a ``datasets.Dataset`` with columns ``idx``, ``label`` and one per
    attribute of the dataset (if any). ``args`` maps each accepted argument to its default
    value (``None``: required). The harness's own ``max_per_client`` is accepted by every
    partitioner and applied after it ran; ``build`` never sees it.
    """

    name: str
    build: Callable[..., Any]
    args: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


AGGREGATES = ("sum", "last", "mean", "max")


@dataclass(frozen=True)
class MetricSpec:
    """A metric a cell reports: its unit, direction and how it aggregates.

    ``aggregate`` folds a figure reported per round (``run.round_end(round, name=value)``)
    into the cell's: "sum" (bytes, FLOPs, time), "last" (a loss after the last round), "mean"
    or "max" (the worst round). A value the server loop returns at the end wins over the folded
    one, except for what the harness measures itself (its sums and maxima: bytes, FLOPs,
    latency, energy; and the quality target's figures, from the FIDs it scored). Over seeds,
    the leaderboard always shows the mean and the std; ``higher_is_better`` orders ranks."""

    name: str
    unit: str
    higher_is_better: bool
    aggregate: str = "mean"
    summary: str = ""

    def __post_init__(self):
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"metric '{self.name}': aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")


@dataclass(frozen=True)
class StudySpec:
    """A study a plugin ships: a suite measured in full, turned into a page by
    ``fedfuse report NAME --out STORE`` (the leaderboard's rows with the study's own
    ``columns``, a figure of each ``(x, y)`` in ``panels``, one sample grid per configuration,
    and the study's ``claims`` checked).

    ``claims`` is a function (or ``"module:function"``) taking the study's ranked rows (the
    leaderboard's ``Row`` objects: ``mean``, ``std``, ``values``, ``label``) and returning
    lines of verdicts; ``fedfuse.api.overlaps`` tells two rows apart as the leaderboard does."""

    name: str  # the suite it reports, e.g. "seed-split-diffusion"
    summary: str
    protocol: str = ""  # the protocol whose README links the page ("": the harness's own)
    columns: tuple[str, ...] = ()
    panels: tuple[tuple[str, str], ...] = ()
    claims: Callable[[list], list[str]] | str | None = None

    def load_claims(self) -> Callable[[list], list[str]] | None:
        return load_ref(self.claims) if self.claims else None
