"""The harness's evaluation of a trained federation: one code path for every protocol.

A protocol declares how its clients generate once training is over (``run.deploy(...)`` or
``run.deploy_model(...)``). When its server loop has returned, the harness asks every client
for samples and scores them twice:

- **client quality** (``fid``, ``kid``, ``recall``, ...): each client's samples against held-out
  images drawn in that client's own label proportions (what a participant gets); the mean over
  clients. A conditional deployment is asked for the same label mix.
- **population quality** (``pop_fid``, ...): all clients' samples pooled, each client's share in
  proportion to its data, against the whole held-out set (what the federation learned).

Each comes with its references (real floor, blur, noise) on the same distribution and n, and
the key of that distribution (``eval_distribution``, ``pop_eval_distribution``): the leaderboard
never ranks rows of different keys together. Generating here is evaluation: nothing it moves or
computes is counted as the protocol's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from fedfuse.bench.suites.cells import cell_partitions
from fedfuse.toolkit.seeding import derive_seed

GENERATE_SALT = 0x5A  # the seed stream of the evaluation samples
TARGET_SALT = 0x7A  # ... and of the quality target's, in the rounds it is checked
MIX_SALT = 0x3A1  # the order of a conditional request's labels, and of the reference pool's images
MIN_REAL = 2  # held-out images a client's real set needs at least (a covariance): fewer cannot be scored
POPULATION_PREFIX = "pop_"


@dataclass(frozen=True)
class Request:
    """What the harness asks one client to generate: ``n`` images seeded by ``seed``; for a
    conditional deployment, ``labels`` holds one class label per image in the client's own
    label proportions (None for an unconditional one)."""

    n: int
    labels: torch.Tensor | None
    seed: int


@dataclass(frozen=True)
class Deployment:
    """How a trained federation generates. ``generate({client: Request}) -> {client: images}``
    (float images in [-1, 1], ``Request.n`` of them). ``shared``: every client holds the same
    unconditional model, so one request stands for all (generated once)."""

    generate: Callable[[dict[int, Request]], dict[int, torch.Tensor]]
    conditional: bool = False
    shared: bool = False

    def __post_init__(self):
        if self.conditional and self.shared:
            raise ValueError("a shared deployment is asked once for every client: it cannot be conditional "
                             "(each client asks for its own label mix)")


def apportion(weights: np.ndarray, n: int) -> np.ndarray:
    """``n`` split over ``weights`` by largest remainders: integer counts that sum to ``n``."""
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


def label_mix(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """How many of ``labels`` are of each class."""
    return np.bincount(labels, minlength=num_classes).astype(np.float64)


def pick_in_mix(order: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The first ``counts[c]`` indices of class c in ``order`` (a fixed order of ``labels``)."""
    picked = [order[labels[order] == c][:k] for c, k in enumerate(counts) if k]
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)


def real_counts(mix: np.ndarray, available: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` held-out images in the proportions of ``mix``: fewer where the held-out split
    has too few of a class (digits holds out about 30 a class); never a drawn image twice. A
    class the held-out split lacks is left out of the mix (nothing to score it against)."""
    mix = np.where(available > 0, mix, 0.0)
    if mix.sum() == 0:
        return np.zeros(len(mix), dtype=np.int64)
    share = mix / mix.sum()
    most = int(min(available[c] / share[c] for c in np.flatnonzero(share)))
    return apportion(mix, min(n, most))


def requested_labels(mix: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """``n`` class labels in the proportions of ``mix``, in a seeded order (a sample grid shows
    every class, not the first one's images only)."""
    labels = np.repeat(np.arange(len(mix)), apportion(mix, n))
    return torch.from_numpy(np.random.default_rng(seed).permutation(labels))


class Scorer:
    """Scores one cell's deployment; ``run`` is its ``ServerRun`` (data, cell, feature space)."""

    def __init__(self, run, grids: str = "", n: int | None = None):
        self.run, self.data, self.cell = run, run.data, run.cell
        self.grids = grids  # the sample grids' file-name prefix (a reference model's: its figures' prefix)
        self.n = n or run.cell.evaluation["samples"]
        self.parts = cell_partitions(run.cell)
        self.classes = len(self.data.class_names)

    def mix_of(self, client: int) -> np.ndarray:
        return label_mix(self.data.train_labels.numpy()[self.parts[client]], self.classes)

    def shares(self) -> dict[int, int]:
        """{client: its share of ``n`` by its data size} (the clients with a share)."""
        counts = apportion(np.array([len(p) for p in self.parts], dtype=np.float64), self.n)
        return {c: int(k) for c, k in enumerate(counts) if k}

    def requests(self, deployment: Deployment, counts: dict[int, int] | None = None,
                 salt: int = GENERATE_SALT) -> dict[int, Request]:
        """{client: Request}: ``counts[client]`` images each (default: ``n`` from every client,
        or from client 0 alone for a shared deployment)."""
        counts = counts or ({0: self.n} if deployment.shared else dict.fromkeys(range(self.cell.clients), self.n))
        return {c: Request(k, requested_labels(self.mix_of(c), k, derive_seed(self.cell.seed, MIX_SALT, c))
                           if deployment.conditional else None, derive_seed(self.cell.seed, salt, c))
                for c, k in counts.items()}

    def score(self, deployment: Deployment) -> dict:
        """Client and population quality of ``deployment``, each beside its references."""
        images = self.generated(deployment)
        return {**self.client_quality(images), **self.population_quality(images, deployment.shared)}

    def generated(self, deployment: Deployment, counts: dict[int, int] | None = None,
                  salt: int = GENERATE_SALT) -> dict[int, torch.Tensor]:
        requests = self.requests(deployment, counts, salt)
        with self.run.uncounted() as moved:
            images = deployment.generate(requests)
        self.asked, self.moved = requests, moved
        asked = sorted(requests)
        if sorted(images) != asked:  # e.g. a client dropped, or images keyed by node id
            raise ValueError(f"the deployment answered for clients {sorted(images)}; the harness asked {asked}")
        for client, x in images.items():
            if len(x) != requests[client].n:
                raise ValueError(f"the deployment made {len(x)} images for client {client}; the harness asked for "
                                 f"{requests[client].n}")
        if deployment.shared:
            images = dict.fromkeys(range(self.cell.clients), images[asked[0]])
        return images

    def deployment_traffic(self) -> dict:
        """What crossed Flower per image while the clients generated (after ``generated``): e.g.
        split diffusion's server sending each image's x_cut. Bytes as measured (evaluation
        images returned to the harness excluded), time and radio energy by the client's network
        (the cost model's formulas); the means over the clients asked. 0 where clients
        generate on their own."""
        rows = []
        for client, request in self.asked.items():
            t = {k: self.moved.get(client, {}).get(k, 0) / request.n for k in ("bytes_up", "bytes_down")}
            cost = self.run.hardware.client_round_cost(client, {"flops_train": 0.0, "flops_sample": 0.0, **t})
            rows.append((t["bytes_up"] + t["bytes_down"], cost["t_down_s"] + cost["t_up_s"], cost["e_up_j"]))
        moved, seconds, joules = np.mean(rows, axis=0)
        return {"client_gen_bytes": float(moved), "client_gen_net_s": float(seconds), "client_gen_net_j": float(joules)}

    def client_quality(self, images: dict[int, torch.Tensor]) -> dict:
        """Each client's samples against held-out images in its own label mix; the mean."""
        eval_labels, order = self.data.eval_labels.numpy(), self.run.eval_order()
        scores, real_n = [], []
        for client in sorted(images):
            counts = real_counts(self.mix_of(client), label_mix(eval_labels, self.classes), self.n)
            if counts.sum() < MIN_REAL:
                raise ValueError(f"client {client}'s label mix has {counts.sum()} held-out images to be scored against "
                                 f"(at least {MIN_REAL} needed): the dataset holds out too few of its classes")
            real = self.data.eval_images[pick_in_mix(order, eval_labels, counts)]
            pool = self.reference_pool(self.mix_of(client))
            scores.append(self.run.score_against(images[client], real, pool, f"{self.grids}samples_client{client}.png",
                                                 {"mix": counts.tolist(), "pool": len(pool)}))
            real_n.append(len(real))
        numeric = [k for k, v in scores[0].items() if isinstance(v, float) and all(k in s for s in scores)]
        return {**scores[0], **{k: float(np.mean([s[k] for s in scores])) for k in numeric},
                "eval_real_n": float(min(real_n)), "eval_distribution": self.client_key()}

    def reference_pool(self, mix: np.ndarray) -> torch.Tensor:
        """``n`` training images in ``mix``'s proportions, for the real and blur references."""
        labels = self.data.train_labels.numpy()
        order = np.random.default_rng(derive_seed(0, MIX_SALT)).permutation(len(labels))
        return self.data.train_images[pick_in_mix(order, labels, apportion(mix, self.n))]

    def population_quality(self, images: dict[int, torch.Tensor], shared: bool) -> dict:
        """All clients' samples, each client's share by its data size, against the whole held-out
        set, or, where some class is held by no client (a suite's public classes), against
        held-out images in the clients' pooled label mix (``shared``: one model's samples stand
        for every client's)."""
        pooled = images[0] if shared else torch.cat([images[c][:k] for c, k in self.shares().items()])
        real, pool, key = self.population_real()
        scores = self.run.score_against(pooled, real, pool, f"{self.grids}samples.png", {"classes": None})
        return {**{POPULATION_PREFIX + k: v for k, v in scores.items() if k not in ("feature_space", "featnet_accuracy")},
                "pop_eval_distribution": key, "pop_eval_real_n": float(len(real))}

    def population_real(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The population's held-out images, the training images its references draw from, and
        the distribution's key."""
        mix = sum(self.mix_of(c) for c in range(self.cell.clients))
        if (mix > 0).all():
            return self.run.eval_subset(self.n)[0], self.data.train_images, self.population_key()
        eval_labels = self.data.eval_labels.numpy()
        counts = real_counts(mix, label_mix(eval_labels, self.classes), self.n)
        real = self.data.eval_images[pick_in_mix(self.run.eval_order(), eval_labels, counts)]
        return real, self.reference_pool(mix), self.population_key(pooled=True)

    def client_key(self) -> str:
        """The client-quality distribution: every client's own label mix of this split, at this n."""
        return f"each client's label mix: {self.cell.dataset_name}/{self.cell.partition_name}, " \
               f"{self.cell.clients} clients, n={self.n}, {self.run.feature_space()[1]['feature_space']}"

    def population_key(self, pooled: bool = False) -> str:
        where = f"the clients' pooled label mix: {self.cell.dataset_name}/{self.cell.partition_name}" if pooled else \
            f"all held-out: {self.cell.dataset_name}"
        return f"{where}, n={self.n}, {self.run.feature_space()[1]['feature_space']}"


def evaluate(run, deployment: Deployment | None) -> dict:
    """Client and population quality of ``deployment``, each beside its references, the
    membership attack on the model the server declared it holds (``run.server_holds``) and the
    disclosure of what it declared it received (``run.server_received``). On a track (a budget)
    every entry is scored by the harness: one that deployed nothing fails."""
    return {**quality(run, deployment), **run.membership_inference(), **run.disclosure_figures()}


def quality(run, deployment: Deployment | None) -> dict:
    if deployment is None:
        if run.cell.budget:
            raise ValueError("a track's entries are scored by the harness: the server loop must declare how its "
                             "trained clients generate (run.deploy_model(...) or run.deploy(...))")
        return {}
    if run.cell.evaluation.get("conditional") and not deployment.conditional:
        raise ValueError("this track asks for class-conditional generation: the protocol deployed an unconditional "
                         "model (train a class-conditional one and declare run.deploy(..., conditional=True))")
    scorer = Scorer(run)
    return {**scorer.score(deployment), **scorer.deployment_traffic()}


def reference_quality(run, deployment: Deployment, prefix: str) -> dict:
    """A reference model's quality (e.g. a fine-tuned model's base before any round), scored as
    the cell's deployment is: the same requests, distributions, n and references. Each figure is
    named ``<prefix><name>``, each grid ``<prefix>samples*.png``."""
    scores = Scorer(run, grids=prefix).score(deployment)
    return {prefix + k: v for k, v in scores.items() if k not in ("feature_space", "featnet_accuracy")}


def target_quality(run, deployment: Deployment) -> dict:
    """``target_fid``, the suite's quality target in a round it is checked: the deployment's
    population quality at ``target_samples`` images (each client asked for its share by data
    size, its own label mix when conditional; one model's samples when shared) against as many
    held-out images of the population's distribution, in the cell's feature space."""
    from fedfuse.bench.metrics.quality import embed, fid

    scorer = Scorer(run, n=run.cell.evaluation["target_samples"])
    counts = {0: scorer.n} if deployment.shared else scorer.shares()
    images = scorer.generated(deployment, counts, salt=TARGET_SALT)
    real, net = scorer.population_real()[0], run.feature_space()[0]
    return {"target_fid": fid(embed(net, real), embed(net, torch.cat([images[c] for c in sorted(counts)])))}
