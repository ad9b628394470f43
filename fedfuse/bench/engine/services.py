"""What the harness hands a protocol: ``ServerRun`` to its server loop, ``ClientRun`` to its clients."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fedfuse.bench.costs.flops import FlopMeter
from fedfuse.bench.suites.cells import DEFAULT_MIA_SAMPLES, CellSpec, cell_partitions
from fedfuse.datasets import ClientData, ImageData
from fedfuse.datasets.loading import load
from fedfuse.toolkit.seeding import derive_seed

EVAL_SUBSET_SEED = 7
EVAL_LOSS_IMAGES = 512  # held-out images of every protocol's eval_loss
EVAL_NOISE_SALT = 0xE7A1  # the held-out loss draws the same t and noise in every round and protocol
MIA_SALT = 0x3E3B  # the membership attack's members: the same for every protocol of a cell's seed and split

#: Key of the Flower run config that carries the cell (as JSON) to ServerApp and ClientApps.
RUN_CONFIG_KEY = "fedfuse-cell"


def load_protocol_config(cell: CellSpec, reg=None) -> Any:
    """The cell's protocol config as its dataclass (JSON lists become tuples where declared)."""
    from fedfuse.plugins.config import build_config
    from fedfuse.plugins.manager import registry

    spec = (reg or registry()).get("protocols", cell.protocol)
    return build_config(spec.config, cell.config, f"cell {cell.name}")


@dataclass
class ServerRun:
    """The server loop's view of a cell.

    ``grid`` counts every message; ``flops`` measures the server's own training and sampling
    steps (``with run.flops.step("train", key): ...``). Call ``round_end(r, train_loss=...)``
    once per round: the harness adds the round's traffic, FLOPs, simulated latency and energy,
    stores the record and notifies observers. A protocol that chooses clients' CPU frequency
    or transmit power calls ``set_operating_point`` before ``round_end``.
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
    _points: dict = field(default_factory=dict)

    @classmethod
    def for_cell(cls, cell: CellSpec, run_dir: Path, reg) -> "ServerRun":
        """The server's view of ``cell``: its protocol config checked, its clients' hardware drawn
        (the same in the runner and in a deployment's ServerApp process)."""
        from fedfuse.bench.costs.costing import CellHardware

        return cls(cell=cell, config=load_protocol_config(cell, reg), run_dir=run_dir,
                   hardware=CellHardware.for_cell(cell, reg),
                   reply_check=reg.get("protocols", cell.protocol).load_reply_check())

    def set_operating_point(self, client: int, cpu_freq_hz: float | None = None, tx_power_w: float | None = None):
        """Client ``client`` (partition id) runs this round at this frequency and power."""
        self._points[client] = (cpu_freq_hz, tx_power_w)

    @functools.cached_property
    def rng(self) -> np.random.Generator:
        """The cell's seeded generator for the server loop's own draws (one stream per cell)."""
        return np.random.default_rng(derive_seed(self.cell.seed, 0xC0FFEE))

    def torch_generator(self, *salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.cell.seed, 0x5E, *salt))

    @property
    def data(self) -> ImageData:
        """The dataset: ``eval_*`` for server-side evaluation, ``public`` for what any party may
        use. Training on the clients' private images happens on the clients."""
        return load(self.cell.dataset, self.cell.dataset_args)

    def eval_subset(self, n: int, classes: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` held-out images and labels (of ``classes`` only, if given), the same for every
        cell of this dataset: a fixed random subset, never the first n (test sets may be ordered)."""
        data, pick = self.data, self.eval_order(classes)[:n]
        return data.eval_images[pick], data.eval_labels[pick]

    def eval_order(self, classes: list[int] | None = None) -> np.ndarray:
        """Indices of the held-out images (of ``classes`` only, if given) in one fixed random
        order, the same for every cell of this dataset: ``eval_subset`` takes the first n."""
        labels = self.data.eval_labels.numpy()
        pick = np.random.default_rng(EVAL_SUBSET_SEED).permutation(len(labels))
        return pick if classes is None else pick[np.isin(labels[pick], classes)]

    @property
    def resources(self):
        """Where models train and sample (``fedfuse.toolkit.device.Resources``)."""
        return self.cell.system

    def held_out_loss(self, model, scheduler, classes: list[int] | None = None, conditional: bool = False,
                      encode=lambda x: x) -> float:
        """Every protocol's ``eval_loss``: the noise-prediction loss on the same
        ``EVAL_LOSS_IMAGES`` held-out images (of ``classes`` only, if given) with the same
        timesteps and noise, whatever the protocol or round. ``encode`` maps images to the
        model's inputs (e.g. VAE latents)."""
        from fedfuse.toolkit.ddpm import evaluate

        images, labels = self.eval_subset(EVAL_LOSS_IMAGES, classes)
        return evaluate(model, scheduler, encode(images), 64, self.torch_generator(EVAL_NOISE_SALT),
                        labels if conditional else None)

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

    def feature_space(self):
        """(feature network, card) that quality and disclosure are measured in for this cell."""
        from fedfuse.bench.metrics import spaces

        return spaces.for_cell(self.cell, self.data)

    def score_samples(self, images: torch.Tensor, classes: list[int] | None = None,
                      grid_name: str = "samples.png") -> dict:
        """FID, KID (± std), precision, recall, density and coverage of generated ``images``
        against the held-out split (its ``classes`` only, if given), in the cell's feature
        space; saves a sample grid PNG in the run directory."""
        from fedfuse.bench.metrics.quality import save_grid, score

        net, card = self.feature_space()
        real, _ = self.eval_subset(self.cell.evaluation["samples"], classes)
        save_grid(images, self.run_dir / grid_name)
        quality = score(net, real, images)
        return {**quality, **self.reference_figures(quality, net, card, real, classes),
                "feature_space": card["feature_space"], "featnet_accuracy": card.get("test_accuracy")}

    def reference_figures(self, quality: dict, net, card: dict, real: torch.Tensor, classes) -> dict:
        """The real / blur / noise reference rows at this cell's n, and ``fid_vs_noise``."""
        from fedfuse.bench.metrics import references

        data = self.data
        pool = data.train_images if classes is None else data.train_images[np.isin(data.train_labels.numpy(), classes)]
        key = {"space": card["feature_space"], "dataset": self.cell.dataset, "args": self.cell.dataset_args,
               "classes": classes}
        rows = references.references(key, net, real, pool, self.cell.evaluation["samples"])
        return references.cell_figures(quality, rows)

    def sample_and_score(self, model, train_timesteps: int) -> dict:
        """Generate the cell's evaluation samples with an unconditional ``model`` (sampler
        service) and score them. Evaluation: its FLOPs are not counted as the protocol's. Adds
        ``client_gen_*``: a client holding ``model`` generating one image itself, and
        ``mia_*``: the membership attack on ``model`` (trained with the toolkit's scheduler)."""
        from fedfuse.toolkit.ddpm import build_scheduler

        ev = self.cell.evaluation
        images = self._generate(model, ev["samples"], 0x5A, train_timesteps)
        # every client holds this model: generating at deployment costs it all the steps
        return {**self.checksum(model), **self.score_samples(images),
                **self.client_generation(model, min(ev["sample_steps"], train_timesteps)),
                **self.membership_inference(model, build_scheduler(train_timesteps))}

    def membership_inference(self, model, scheduler, *, conditional: bool = False, label_map: Callable | None = None,
                             t_range: tuple[int, int] | None = None, encode: Callable = lambda x: x,
                             step_loss: Callable | None = None) -> dict:
        """The loss-threshold membership attack on the ``model`` the server holds (trained with
        ``scheduler``'s noising and prediction type): ``mia_auc``, ``mia_tpr_at_1fpr`` and the
        counts ``mia_members``, ``mia_nonmembers`` (docs/metrics.md). The harness picks the
        members (the clients' private images) and the class-matched non-members (held-out
        images). ``conditional``: the model takes class labels, ``label_map(labels)`` of the
        dataset's; ``t_range``: the timesteps the model denoises, [low, high); ``encode``: images
        to the model's inputs (e.g. VAE latents); ``step_loss(model, x, t, noise, labels)``: a
        per-image loss for a denoiser trained on another noising or target than ``scheduler``'s.
        Evaluation: its FLOPs are not counted as the protocol's."""
        from fedfuse.bench.metrics.mia import attack

        data, (members, heldout) = self.data, self.membership_sets()
        labels = (label_map or (lambda y: y)) if conditional else (lambda y: None)
        return attack(model, scheduler, encode(data.train_images[members]), encode(data.eval_images[heldout]),
                      labels(data.train_labels[members]), labels(data.eval_labels[heldout]), t_range, step_loss)

    def membership_sets(self) -> tuple[np.ndarray, np.ndarray]:
        """The attack's members, a seeded draw of ``mia_samples`` of the clients' private images
        over all clients (training-image indices), and as many held-out images with the same
        classes (held-out indices), pair i of the same class."""
        from fedfuse.bench.metrics.mia import class_matched, draw_members

        n = self.cell.evaluation.get("mia_samples", DEFAULT_MIA_SAMPLES)
        private = np.unique(np.concatenate(cell_partitions(self.cell)))
        members, pool = draw_members(private, n, derive_seed(self.cell.seed, MIA_SALT)), self.eval_order()
        mine, theirs = class_matched(self.data.train_labels.numpy()[members], self.data.eval_labels.numpy()[pool])
        return members[mine], pool[theirs]

    def target_check(self, model, round: int, train_timesteps: int, classes: list[int] | None = None,
                     **model_kwargs) -> dict:
        """``{"target_fid": FID}`` of ``target_samples`` images from ``model`` (the sampler
        service; ``model_kwargs`` such as ``class_labels`` for a conditional one) in the rounds
        the suite's target asks for (``target_due``), else ``{}``. Pass it to ``round_end``:
        the harness then records the first round that meets the target and the energy,
        latency and bytes spent until then. Evaluation: FLOPs not counted. A protocol whose
        model is spread over parties generates its own way and calls ``target_score``."""
        if not self.target_due(round):
            return {}
        n = self.cell.evaluation["target_samples"]
        images = self._generate(model, n, 0x7A, train_timesteps, **{k: v[:n] for k, v in model_kwargs.items()})
        return self.target_score(images, classes)

    def target_due(self, round: int) -> bool:
        """Whether the suite's quality target is checked after ``round`` (every ``eval_every``-th
        and the last); generate ``target_samples`` images then, inside ``uncounted()``."""
        ev = self.cell.evaluation
        return "target" in ev and (round % ev["eval_every"] == 0 or round == self.cell.rounds)

    def target_score(self, images: torch.Tensor, classes: list[int] | None = None) -> dict:
        """``{"target_fid": FID}`` of ``images`` against as many held-out images (of ``classes``
        only, if given), in the cell's feature space."""
        from fedfuse.bench.metrics.quality import embed, fid

        net, _ = self.feature_space()
        real, _ = self.eval_subset(len(images), classes)
        return {"target_fid": fid(embed(net, real), embed(net, images))}

    @contextlib.contextmanager
    def uncounted(self):
        """Exchanges for evaluation only (e.g. a split protocol gathering samples for its quality
        target): no byte, message or client FLOP inside is the protocol's. Pass ``flops=None``
        for the server's own work inside."""
        with self.grid.meter.uncounted():
            yield

    def _generate(self, model, n: int, salt: int, train_timesteps: int, **model_kwargs) -> torch.Tensor:
        """``n`` images from ``model`` by the suite's sampler, seeded by the cell and ``salt``."""
        from fedfuse.toolkit.sampling import sample

        ev = self.cell.evaluation
        return sample(model, n, self.data.image_shape, train_timesteps, ev["sample_steps"], ev["sampler"],
                      seed=derive_seed(self.cell.seed, salt), resources=self.resources, **model_kwargs)

    @staticmethod
    def checksum(model) -> dict:
        """``model_sha256``: the final weights' digest (the first 16 hex digits), to tell whether
        two runs of a cell (e.g. simulation and deployment) trained exactly the same model."""
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return {"model_sha256": digest.hexdigest()[:16]}

    def disclosure(self, shared: torch.Tensor, private: torch.Tensor, kid: bool = True) -> dict:
        """How close ``shared`` tensors (or reconstructions from them) are to ``private`` images;
        ``kid=False`` leaves out ``kid_to_private`` (for a caller that scores the set anyway)."""
        from fedfuse.bench.metrics.disclosure import disclosure

        return disclosure(shared, private, self.feature_space()[0] if kid else None)

    def disclosure_sets(self, sets: dict[str, torch.Tensor], private: torch.Tensor, classes: list[int]) -> dict:
        """FID and KID of each named set of images (what the server received, or what it made
        of it) against a client's ``private`` images and, as the reference point, against
        held-out images of its ``classes``: ``disclosure_fid_<name>``, ``..._heldout``."""
        from fedfuse.bench.metrics.disclosure import set_distances

        heldout, _ = self.eval_subset(self.cell.evaluation["samples"], classes)
        return set_distances(sets, private, heldout, self.feature_space()[0])

    def client_generation(self, model, steps: int | dict[int, int], guided: bool = False, shape=None,
                          conditional: bool | None = None) -> dict:
        """What generating one image costs a client at deployment: ``steps`` calls of
        ``model`` (one per sampling step; an int for all clients or {client: steps}; two passes
        a call when ``guided``) on an input of ``shape`` (default: the images'), FLOPs from
        torch's counter, time and energy from each client's device profile; the means over
        clients. ``model`` None: clients do not generate. Denoiser calls only (not a decoder)."""
        from fedfuse.bench.costs.flops import denoiser_call_flops

        per_call = 0.0 if model is None else denoiser_call_flops(model, shape or self.data.image_shape,
                                                                 2 if guided else 1, conditional)
        counts = steps if isinstance(steps, dict) else dict.fromkeys(range(self.cell.clients), steps)
        flops = {c: per_call * counts.get(c, 0) for c in range(self.cell.clients)}
        cost = self.hardware.client_compute(flops)
        return {"client_gen_flops": float(np.mean(list(flops.values()))), "client_gen_s": cost["t_cmp_s"],
                "client_gen_j": cost["e_cmp_j"]}

    def round_end(self, round: int, **figures: float) -> dict:
        traffic, counts = self.grid.meter.take_round()
        server_flops = sum(self.flops.take().values())
        costs = self.hardware.round_figures(traffic, server_flops, self._points)
        self._points = {}
        record = {"round": round, "elapsed_s": time.time() - self.started, **figures, **costs, **counts}
        self.rounds.append(record)
        self.on_round(record)
        return record


@dataclass
class ClientRun:
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

    @property
    def resources(self):
        """Where this client's models train and sample (``fedfuse.toolkit.device.Resources``)."""
        return self.cell.system

    def torch_generator(self, *salt: int) -> torch.Generator:
        """Seeded by (cell seed, partition id, *salt): pass the round so rounds differ."""
        return torch.Generator().manual_seed(derive_seed(self.cell.seed, self.partition_id, *salt))


def client_run(context) -> ClientRun:
    """Build (once per process and Flower run) the ClientRun for a Flower ``Context``. A process
    serves one run at a time, so a new run empties the cache: a warm actor that serves a cell
    again (a rerun, the conformance check's second run) starts afresh, as a new process would."""
    global _LAST_RUN_ID
    if context.run_id != _LAST_RUN_ID:
        _client_run.cache_clear()
        _LAST_RUN_ID = context.run_id
    node = context.node_config
    return _client_run(context.run_config[RUN_CONFIG_KEY], int(node["partition-id"]), int(node["num-partitions"]))


_LAST_RUN_ID = None


@functools.lru_cache(maxsize=8)
def _client_run(cell_json: str, partition_id: int, num_partitions: int) -> ClientRun:
    cell = CellSpec.from_json(cell_json)
    if num_partitions != cell.clients:
        raise RuntimeError(f"this SuperNode is one of {num_partitions} partitions, the cell has {cell.clients} clients")
    data = load(cell.dataset, cell.dataset_args)
    view = ClientData(data.train_images, data.train_labels, torch.from_numpy(cell_partitions(cell)[partition_id]))
    return ClientRun(cell, load_protocol_config(cell), partition_id, num_partitions, view)

