"""What the harness measures of a protocol's models, for ``ServerRun`` (the ``Evaluation`` half
of it): held-out loss, generated samples scored with reference points, quality targets,
membership inference on the model the server declares it holds, and disclosure. Evaluation only: nothing here is counted as the
protocol's bytes or FLOPs."""

from __future__ import annotations

import math

import hashlib
from typing import Callable

import numpy as np
import torch

from fedfuse.bench.suites.cells import DEFAULT_MIA_SAMPLES, cell_partitions
from fedfuse.toolkit.seeding import derive_seed

EVAL_SUBSET_SEED = 7
EVAL_LOSS_IMAGES = 512  # held-out images of every protocol's eval_loss
EVAL_NOISE_SALT = 0xE7A1  # the held-out loss draws the same t and noise in every round and protocol
MIA_SALT = 0x3E3B  # the membership attack's members: the same for every protocol of a cell's seed and split


class Evaluation:
    """Services that measure models; mixed into ``ServerRun``, whose ``cell``, ``data``,
    ``run_dir``, ``resources`` and ``client_generation`` they use."""

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

    def feature_space(self):
        """(feature network, card) that quality and disclosure are measured in for this cell."""
        from fedfuse.bench.metrics import spaces

        return spaces.for_cell(self.cell, self.data)

    def score_reference(self, generate: Callable, *, prefix: str, conditional: bool = False,
                        shared: bool = False) -> dict:
        """Score, now, a reference model the protocol reports beside its own (e.g. fedavg-lora's
        base before any round, ``prefix="base_"``) exactly as the harness scores the cell's
        deployment: ``generate``, ``conditional`` and ``shared`` as in ``deploy``; the same
        requests, distributions, n and references, so the figures compare with the cell's. Each
        figure is named ``<prefix><name>``. Evaluation: nothing here is counted."""
        from fedfuse.bench.engine.scoring import Deployment, reference_quality

        return reference_quality(self, Deployment(generate, conditional, shared), prefix)

    def score_against(self, images: torch.Tensor, real: torch.Tensor, pool: torch.Tensor, grid_name: str,
                      distribution: dict) -> dict:
        """Quality of ``images`` against the ``real`` held-out images, with the real / blur /
        noise references drawn from the training images ``pool`` (the same distribution) at
        this cell's n; ``distribution`` names it in the references' cache key."""
        from fedfuse.bench.metrics import references
        from fedfuse.bench.metrics.quality import save_grid, score

        net, card = self.feature_space()
        save_grid(images, self.run_dir / grid_name)
        quality = score(net, real, images)
        key = {"space": card["feature_space"], "dataset": self.cell.dataset, "args": self.cell.dataset_args,
               **distribution}
        rows = references.references(key, net, real, pool, self.cell.evaluation["samples"])
        return {**quality, **references.cell_figures(quality, rows),
                "feature_space": card["feature_space"], "featnet_accuracy": card.get("test_accuracy")}

    def deploy(self, generate: Callable, *, conditional: bool = False, shared: bool = False) -> None:
        """Declare how the trained clients generate at deployment; the harness scores it once
        the server loop has returned (``fedfuse.bench.engine.scoring``: each client's samples on
        its own label mix, all clients' on the whole held-out set, each with its references).
        ``generate({client: Request}) -> {client: images}``: ``Request.n`` images seeded by
        ``Request.seed``, of ``Request.labels`` when ``conditional``. ``shared``: every client
        holds one unconditional model (asked once). The grid may still be used inside
        ``generate`` (e.g. the server to the cut, then the client): nothing is counted."""
        from fedfuse.bench.engine.scoring import Deployment

        self.deployment = Deployment(generate, conditional, shared)

    def deploy_model(self, model, train_timesteps: int, *, conditional: bool = False) -> dict:
        """Every client holds ``model`` (the FedAvg family): it generates by the suite's sampler
        (class-conditional when ``conditional``), and the server holds it too (``server_holds``:
        the harness attacks it; trained with the toolkit's scheduler). Returns what the harness
        measures of the model itself now: ``model_sha256``, ``model_params`` and ``client_gen_*``
        (a client generating one image). Evaluation: nothing here is counted as the protocol's."""
        from fedfuse.toolkit.ddpm import build_scheduler

        self.deploy(self.holding(model, train_timesteps), conditional=conditional, shared=not conditional)
        self.server_holds(model, build_scheduler(train_timesteps), conditional=conditional)
        steps = min(self.cell.evaluation["sample_steps"], train_timesteps)
        return {**self.checksum(model), "model_params": float(sum(p.numel() for p in model.parameters())),
                **self.client_generation(model, steps, conditional=conditional)}

    def holding(self, model, train_timesteps: int) -> Callable:
        """``generate`` of clients that each hold ``model`` (for ``deploy``, ``target_deployment``)."""
        return lambda requests: {c: self.sample_model(model, r, train_timesteps) for c, r in requests.items()}

    def sample_model(self, model, request, train_timesteps: int) -> torch.Tensor:
        """``request.n`` images of ``model`` by the suite's sampler (of ``request.labels`` if any)."""
        from fedfuse.toolkit.sampling import sample

        ev, labels = self.cell.evaluation, {} if request.labels is None else {"class_labels": request.labels}
        return sample(model, request.n, self.data.image_shape, train_timesteps, ev["sample_steps"], ev["sampler"],
                      seed=request.seed, resources=self.resources, **labels)

    def server_holds(self, model, scheduler, *, conditional: bool = False, label_map: Callable | None = None,
                     t_range: tuple[int, int] | None = None, encode: Callable = lambda x: x,
                     step_loss: Callable | None = None) -> None:
        """Declare the ``model`` the server holds at the end (trained with ``scheduler``'s
        noising and prediction type): the harness runs the loss-threshold membership attack on
        it once the server loop has returned (``mia_auc``, ``mia_tpr_at_1fpr`` and the counts
        ``mia_members``, ``mia_nonmembers``: docs/metrics.md), with members it picks (the clients'
        private images) and class-matched non-members (held-out images). ``conditional``: the
        model takes class labels, ``label_map(labels)`` of the dataset's; ``t_range``: the
        timesteps the model denoises, [low, high); ``encode``: images to the model's inputs
        (e.g. VAE latents); ``step_loss(model, x, t, noise, labels)``: a per-image loss for a
        denoiser trained on another noising or target than ``scheduler``'s. Evaluation: its
        FLOPs are not counted as the protocol's."""
        self.held = dict(model=model, scheduler=scheduler, conditional=conditional, label_map=label_map,
                         t_range=t_range, encode=encode, step_loss=step_loss)

    def server_received(self, node: int, sets: dict, *, reconstruction: str | None = None,
                        conditions: int = 0) -> None:
        """Declare what the server received from client ``node`` that derives from its private
        images, and what it can make of it: ``sets``, named image batches (the first is what
        crossed the wire, e.g. ``{"cut": x_cut, ...}``; the others the server's reconstructions
        or its model's continuations of it); ``reconstruction``: the name of a set that
        reconstructs the shared images one for one; ``conditions``: how many labels crossed
        with them. Once the server loop has returned, the harness measures the disclosure
        (docs/metrics.md): nearest-neighbour MSE/SSIM of the first set (``nn_*``) and of the
        reconstruction (``recon_nn_*``) against the client's private images, FID/KID of every set
        against them and against held-out images of its classes (``disclosure_fid_<name>``,
        ``..._heldout``); the mean over the clients declared. Evaluation: nothing here is counted."""
        limit = self.cell.evaluation["samples"]
        received = getattr(self, "received", {})
        received[node] = dict(sets={k: v[:limit] for k, v in sets.items()}, reconstruction=reconstruction,
                              conditions=conditions)
        self.received = received

    def disclosure_figures(self) -> dict:
        """The disclosure of what ``server_received`` declared ({} if nothing)."""
        rows = [self._disclosed(node, **got) for node, got in getattr(self, "received", {}).items()]
        if not rows:
            return {}
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if all(math.isfinite(r[k]) for r in rows)}

    def _disclosed(self, node: int, sets: dict, reconstruction: str | None, conditions: int) -> dict:
        private, classes = self.client_private(self.partition_of(node))
        shared = next(iter(sets))
        # KID to the private images comes with the set distances (the same figure, computed once)
        distances = self.disclosure_sets(sets, private, classes)
        row = {**self.disclosure(sets[shared], private, kid=False), **distances,
               "kid_to_private": distances[f"disclosure_kid_{shared}"], "disclosed_conditions": float(conditions)}
        if reconstruction:
            recon = self.disclosure(sets[reconstruction], private, kid=False)
            row.update({f"recon_{k}": v for k, v in recon.items()},
                       recon_kid_to_private=distances[f"disclosure_kid_{reconstruction}"])
        return row

    def membership_inference(self) -> dict:
        """The attack on what ``server_holds`` declared ({} if nothing: e.g. a server that holds
        no model of the data)."""
        from fedfuse.bench.metrics.mia import attack

        held = getattr(self, "held", None)
        if held is None:
            return {}
        data, (members, heldout), encode = self.data, self.membership_sets(), held["encode"]
        labels = (held["label_map"] or (lambda y: y)) if held["conditional"] else (lambda y: None)
        return attack(held["model"], held["scheduler"], encode(data.train_images[members]),
                      encode(data.eval_images[heldout]), labels(data.train_labels[members]),
                      labels(data.eval_labels[heldout]), held["t_range"], held["step_loss"])

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

    def target_check(self, model, round: int, train_timesteps: int, *, conditional: bool = False) -> dict:
        """``{"target_fid": FID}`` in the rounds the suite's quality target asks for
        (``target_due``), else ``{}``, of clients that each hold ``model`` (the FedAvg family;
        ``conditional``: asked for their own label mix): ``target_deployment`` of it. Pass it to
        ``round_end``: the harness then records the first round that meets the target and the
        energy, latency and bytes spent until then."""
        return self.target_deployment(round, self.holding(model, train_timesteps), conditional=conditional,
                                      shared=not conditional)

    def target_deployment(self, round: int, generate: Callable, *, conditional: bool = False,
                          shared: bool = False) -> dict:
        """``{"target_fid": FID}`` in the rounds the suite's target asks for, else ``{}``: the
        population quality, at ``target_samples`` images, of clients generating as ``generate``
        makes them now (as in ``deploy``: e.g. the server to the cut, then the client), scored
        by the harness the same way for every protocol (``scoring.target_quality``).
        Evaluation: nothing it moves or computes is counted."""
        from fedfuse.bench.engine.scoring import Deployment, target_quality

        if not self.target_due(round):
            return {}
        figures = target_quality(self, Deployment(generate, conditional, shared))
        self.target_scores[round] = figures["target_fid"]  # what round_end records, whatever it is passed
        return figures

    def target_due(self, round: int) -> bool:
        """Whether the suite's quality target is checked after ``round`` (every ``eval_every``-th
        and the last)."""
        ev = self.cell.evaluation
        return "target" in ev and (round % ev["eval_every"] == 0 or round == self.cell.rounds)

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
