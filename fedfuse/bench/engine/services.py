"""What the harness hands a protocol: ``ServerRun`` to its server loop, ``ClientRun`` to its clients."""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fedfuse.bench.costs.flops import FlopMeter
from fedfuse.bench.engine.evaluation import Evaluation
from fedfuse.bench.metrics.target import FIGURES as TARGET_FIGURES
from fedfuse.bench.suites.cells import CellSpec, cell_partitions
from fedfuse.datasets import ClientData, ImageData
from fedfuse.datasets.loading import load
from fedfuse.toolkit.device import torch_device
from fedfuse.toolkit.seeding import derive_seed

PARTICIPATION_SALT = 0x9A47  # each round's participants: drawn from (cell seed, round, this)

#: Key of the Flower run config that carries the cell (as JSON) to ServerApp and ClientApps.
RUN_CONFIG_KEY = "fedfuse-cell"
#: Key of the cell's run directory in the run config, and the file there that holds the
#: driver's partitions (a ClientApp that cannot see the directory partitions on its own).
RUN_DIR_KEY, PARTITIONS_FILE = "fedfuse-run-dir", "partitions.npz"


def load_protocol_config(cell: CellSpec, reg=None) -> Any:
    """The cell's protocol config as its dataclass (JSON lists become tuples where declared)."""
    from fedfuse.plugins.config import build_config
    from fedfuse.plugins.manager import registry

    spec = (reg or registry()).get("protocols", cell.protocol)
    return build_config(spec.config, cell.config, f"cell {cell.name}")


class OnDevice:
    """Where a cell's models train and sample, for the server's view and a client's alike."""

    cell: CellSpec

    @property
    def resources(self):
        """The cell's ``fedfuse.toolkit.device.Resources`` (accelerator, precision, shares)."""
        return self.cell.system

    @property
    def device(self):
        """The torch device to train on: move what you compute outside ``fit`` there."""
        return torch_device(self.resources)


@dataclass
class ServerRun(Evaluation, OnDevice):
    """The server loop's view of a cell.

    ``grid`` counts every message; ``flops`` measures the server's own training and sampling
    steps (``with run.flops.step("train", key): ...``). Call ``round_end(r, train_loss=...)``
    once per round: the harness adds the round's traffic, FLOPs, simulated latency and energy,
    stores the record and notifies observers. A protocol that chooses clients' CPU frequency
    or transmit power calls ``set_operating_point`` before the round's exchange (a suite's
    ``deadline_s`` is checked as the replies arrive) and in any case before ``round_end``.
    """

    cell: CellSpec
    config: Any
    run_dir: Path
    hardware: Any = None  # fedfuse.bench.costs.costing.CellHardware
    on_round: Callable[[dict], None] = lambda record: None
    on_status: Callable[[str], None] = lambda message: None
    grid: Any = None
    rounds: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    flops: FlopMeter = field(default_factory=FlopMeter)
    system: str = ""  # where it ran, e.g. "cpu x86_64 32-true" (the runner fills it in)
    reply_check: Callable | None = None  # the protocol's schema for its replies (ProtocolSpec.reply_check)
    max_update_ratio: float = 100.0  # the bound on a returned model's update (ProtocolSpec, or the suite's)
    deployment: Any = None  # how the trained clients generate (``deploy``): the harness scores it
    _points: dict = field(default_factory=dict)
    target_scores: dict = field(default_factory=dict)  # {round: target_fid}, as the harness scored it

    @classmethod
    def for_cell(cls, cell: CellSpec, run_dir: Path, reg) -> "ServerRun":
        """The server's view of ``cell``: its protocol config checked, its clients' hardware drawn
        (the same in the runner and in a deployment's ServerApp process)."""
        from fedfuse.bench.costs.costing import CellHardware

        spec = reg.get("protocols", cell.protocol)
        return cls(cell=cell, config=load_protocol_config(cell, reg), run_dir=run_dir,
                   hardware=CellHardware.for_cell(cell, reg), reply_check=spec.load_reply_check(),
                   max_update_ratio=cell.max_update_ratio or spec.max_update_ratio)

    def set_operating_point(self, client: int, cpu_freq_hz: float | None = None, tx_power_w: float | None = None):
        """Client ``client`` (partition id) runs this round at this frequency and power."""
        self._points[client] = (cpu_freq_hz, tx_power_w)

    def torch_generator(self, *salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.cell.seed, 0x5E, *salt))

    @property
    def data(self) -> ImageData:
        """The dataset: ``eval_*`` for server-side evaluation, ``public`` for what any party may
        use. Training on the clients' private images happens on the clients."""
        return load(self.cell.dataset, self.cell.dataset_args)

    def partition_of(self, node_id: int) -> int:
        """The client (partition id) a Flower node serves, as the harness's handshake found it."""
        return self.grid.meter.partition_of[node_id]

    def client_private(self, client: int) -> tuple[torch.Tensor, list[int]]:
        """For evaluation only (the harness, not the protocol, sees it): all of a client's
        private images and the classes it holds — to score its own samples against its
        classes and to measure what it discloses."""
        data, idx = self.data, cell_partitions(self.cell)[client]
        return data.train_images[idx], sorted(set(data.train_labels[idx].tolist()))

    def status(self, message: str) -> None:
        """A line for the progress display (e.g. during a long pre-training)."""
        self.on_status(message)

    @contextlib.contextmanager
    def uncounted(self):
        """Exchanges for evaluation only (e.g. a split protocol gathering samples for its quality
        target): no byte, message or client FLOP inside is the protocol's. Pass ``flops=None``
        for the server's own work inside. Yields a dict that, on leaving, holds what crossed
        inside ({client: figures}: the harness prices deployment traffic with it)."""
        with self.grid.meter.uncounted() as inside:
            yield inside

    def client_generation(self, model, steps: int | dict[int, int], guided: bool = False, shape=None,
                          conditional: bool | None = None) -> dict:
        """What generating one image costs a client at deployment: ``steps`` calls of
        ``model`` (one per sampling step; an int for all clients or {client: steps}; two passes
        a call when ``guided``) on an input of ``shape`` (default: the images'), FLOPs from
        torch's counter, time and energy from each client's device profile; the means over
        clients. ``model`` None: clients do not generate. Denoiser calls only (not a decoder)."""
        flops = self._generation_flops(model, steps, guided, shape, conditional)
        cost = self.hardware.client_compute(flops)
        return {"client_gen_flops": float(np.mean(list(flops.values()))), "client_gen_s": cost["t_cmp_s"],
                "client_gen_j": cost["e_cmp_j"]}

    def server_generation(self, model, steps: int | dict[int, int], guided: bool = False, shape=None,
                          conditional: bool | None = None) -> dict:
        """What the server computes for each image a client generates at deployment (e.g. split
        diffusion's steps above the cut), as ``client_generation`` counts it, time from the
        server's device profile: ``server_gen_flops`` and ``server_gen_s``, the means over clients."""
        from fedfuse.bench.costs.costmodel import compute_time

        flops = float(np.mean(list(self._generation_flops(model, steps, guided, shape, conditional).values())))
        return {"server_gen_flops": flops, "server_gen_s": compute_time(flops, self.hardware.server)}

    def _generation_flops(self, model, steps, guided, shape, conditional) -> dict[int, float]:
        """{client: FLOPs of ``steps`` calls of ``model`` on one image} (0 where ``model`` is None)."""
        from fedfuse.bench.costs.flops import denoiser_call_flops

        per_call = 0.0 if model is None else denoiser_call_flops(model, shape or self.data.image_shape,
                                                                 2 if guided else 1, conditional)
        counts = steps if isinstance(steps, dict) else dict.fromkeys(range(self.cell.clients), steps)
        return {c: per_call * counts.get(c, 0) for c in range(self.cell.clients)}

    def begin_round(self, round: int) -> list[int]:
        """This round's participants (node ids in partition order): all clients, or with a
        suite's ``participation`` a draw of ``cell.per_round`` of them from the cell's seed and
        the round, among those online (the profile's ``availability``; fewer when fewer are
        online, none when nobody is: then end the round without an exchange). Until
        ``round_end``, ``grid.get_node_ids()`` lists only them (so a Flower strategy samples from
        them). Call it first thing in every round."""
        nodes = [n for n in sorted(self.grid.meter.partition_of, key=self.partition_of)
                 if self.online[round - 1, self.partition_of(n)]]
        k = min(self.cell.per_round, len(nodes))
        if k < len(nodes):
            picked = np.random.default_rng([self.cell.seed, round, PARTICIPATION_SALT]).choice(len(nodes), k, replace=False)
            nodes = [nodes[i] for i in sorted(picked)]
        self.grid.active, self.grid.round = nodes, round
        return nodes

    @functools.cached_property
    def privacy(self):
        """The cell's DP ledger and server-side service (``fedfuse.bench.engine.privacy``); None without DP."""
        from fedfuse.bench.engine.privacy import CellPrivacy

        return CellPrivacy(self.cell, self.torch_generator) if self.cell.dp else None

    @functools.cached_property
    def online(self) -> np.ndarray:
        """(rounds, clients): who is online in each round, by the profile's availability model."""
        from fedfuse.bench.costs.availability import online

        return online(self.cell.profile.get("availability", {}), self.cell.clients, self.cell.rounds, self.cell.seed)

    def misses_deadline(self, client: int, figures: dict) -> bool:
        """Whether ``client``'s simulated latency from its round ``figures`` so far (bytes,
        FLOPs, at its operating point) exceeds the suite's ``deadline_s`` (the grid asks)."""
        cost = self.hardware.client_round_cost(client, figures, self._points.get(client, (None, None)))
        return cost["latency_s"] > self.cell.deadline_s

    def harness_target(self, round: int, figures: dict) -> dict:
        """``figures`` with the round's ``target_fid`` as the harness scored it (``target_deployment``),
        or none: a protocol passes the figure on, it cannot make up any of the target's figures
        (the same set ``final_metrics`` keeps from a server loop's end)."""
        figures = {k: v for k, v in figures.items() if k not in TARGET_FIGURES}
        return {**figures, "target_fid": self.target_scores[round]} if round in self.target_scores else figures

    def round_end(self, round: int, **figures: float) -> dict:
        """Close round ``round``: its traffic, the server's FLOPs and the clients' simulated time
        and energy are taken from the meters, ``figures`` (the protocol's own, e.g. losses,
        ``target_check``'s) added, and the round record stored and shown. Returns the record.
        ``strategy_rounds`` calls it; a custom loop calls it once at the end of every round."""
        traffic, counts = self.grid.meter.take_round()
        figures = {**self.harness_target(round, figures), **(self.privacy.round_figures(traffic) if self.privacy else {})}
        server_flops = sum(self.flops.take().values())
        costs = self.hardware.round_figures(traffic, server_flops, self._points, self.cell.deadline_s)
        costs["server_train_examples"] = self.flops.take_examples()
        if self.grid.active is not None and (self.cell.per_round < self.cell.clients or "availability" in self.cell.profile):
            figures = {**figures, "available": int(self.online[round - 1].sum()), "participants": len(self.grid.active)}
        self.grid.active = None
        self._points = {}
        record = {"round": round, "elapsed_s": time.time() - self.started, **figures, **costs, **counts}
        self.rounds.append(record)
        self.on_round(record)
        return record


@dataclass
class ClientRun(OnDevice):
    """A client's view of a cell: its partition, the protocol config, seeds."""

    cell: CellSpec
    config: Any
    partition_id: int
    num_partitions: int
    data: ClientData
    flops: FlopMeter = field(default_factory=FlopMeter)  # wrap training/sampling steps in flops.step(...)
    #: what a protocol keeps between messages of this run in this process (a model being
    #: fine-tuned). Bounded: the engine keeps the run's ClientRuns of the last 8 partitions.
    cache: dict = field(default_factory=dict)
    dp_issued: list = field(default_factory=list)  # the DpSgd handed out since the last reply

    @property
    def num_classes(self) -> int:
        """How many class labels the dataset has (a class-conditional model embeds each)."""
        return len(load(self.cell.dataset, self.cell.dataset_args).class_names)

    def torch_generator(self, *salt: int) -> torch.Generator:
        """Seeded by (cell seed, partition id, *salt): pass the round so rounds differ."""
        return torch.Generator().manual_seed(derive_seed(self.cell.seed, self.partition_id, *salt))

    def dp_sgd(self, *salt: int):
        """The cell's record-level DP-SGD (``fedfuse.toolkit.privacy.DpSgd``) for one
        ``train``/``fit`` call on this client's images, or None where the suite entry asks for
        no record-level DP: pass it as ``dp=``. Its noise is seeded from (cell seed, partition id,
        *salt): pass the round. The harness reads the steps it took off the reply."""
        if self.cell.dp.get("level") != "record":  # no DP, or DP-FedAvg on the server
            return None
        from fedfuse.bench.engine.privacy import DP_SALT
        from fedfuse.toolkit.privacy import DpSgd

        seed = derive_seed(self.cell.seed, self.partition_id, DP_SALT, *salt)
        dp = DpSgd(self.cell.dp["clip"], self.cell.dp["noise_multiplier"], torch.Generator().manual_seed(seed),
                   records=len(self.data))
        self.dp_issued.append(dp)
        return dp

    def dp_share(self):
        """The cell's DP for tensors sent that each derive from one private image
        (``fedfuse.toolkit.privacy.DpShare``: split diffusion's ``x_cut``), or None without
        record-level DP. Accounted with the DP-SGD steps, at the same noise multiplier."""
        if self.cell.dp.get("level") != "record":  # no DP, or DP-FedAvg on the server
            return None
        from fedfuse.toolkit.privacy import DpShare

        share = DpShare(self.cell.dp["noise_multiplier"], records=len(self.data))
        self.dp_issued.append(share)
        return share

    def take_dp(self) -> dict:
        """The DP releases (DP-SGD steps, shared batches) since the last call and their summed
        sampling rates (for the reply's cost record)."""
        issued, self.dp_issued = self.dp_issued, []
        steps = sum(d.steps for d in issued)
        return {"dp_steps": steps, "dp_rate_steps": sum(d.rate_steps for d in issued)} if steps else {}


def client_run(context) -> ClientRun:
    """Build (once per process and Flower run) the ClientRun for a Flower ``Context``. A process
    serves one run at a time, so a new run empties the cache: a warm actor that serves a cell
    again (a rerun, the conformance check's second run) starts afresh, as a new process would."""
    global _LAST_RUN_ID
    if context.run_id != _LAST_RUN_ID:
        _client_run.cache_clear()
        _LAST_RUN_ID = context.run_id
    node = context.node_config
    return _client_run(context.run_config[RUN_CONFIG_KEY], int(node["partition-id"]), int(node["num-partitions"]),
                       saved_partitions(context))


_LAST_RUN_ID = None


def saved_partitions(context) -> str | None:
    """The driver's partitions file for ``context``'s cell, where the run config names its folder."""
    run_dir = context.run_config.get(RUN_DIR_KEY)
    return str(Path(str(run_dir)) / PARTITIONS_FILE) if run_dir else None


def load_client_data(context) -> None:
    """Load (into this process's caches) the data a client of ``context``'s cell reads: the
    dataset and the partitions. Harness data only, read-only: a process that forks a process
    per message (the conformance check's) loads it once, and no protocol code runs."""
    cell = CellSpec.from_json(context.run_config[RUN_CONFIG_KEY])
    load(cell.dataset, cell.dataset_args)
    cell_partitions(cell, saved_partitions(context))


@functools.lru_cache(maxsize=8)
def _client_run(cell_json: str, partition_id: int, num_partitions: int, saved: str | None) -> ClientRun:
    cell = CellSpec.from_json(cell_json)
    if num_partitions != cell.clients:
        raise RuntimeError(f"this SuperNode is one of {num_partitions} partitions, the cell has {cell.clients} clients")
    data = load(cell.dataset, cell.dataset_args)
    view = ClientData(data.train_images, data.train_labels, torch.from_numpy(cell_partitions(cell, saved)[partition_id]))
    return ClientRun(cell, load_protocol_config(cell), partition_id, num_partitions, view,
                     flops=FlopMeter(scope=cell.cell_id))  # dry-step FLOPs kept for the cell's later messages

