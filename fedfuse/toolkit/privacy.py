"""Record-level differential privacy for training: DP-SGD (Abadi et al., 2016). Each image's
gradient is clipped to an L2 norm ``clip`` and Gaussian noise of standard deviation
``noise_multiplier * clip`` is added to their sum; what it protects is one image of the
training set, the unit the membership attack tests. ``fit`` applies it to every optimizer step
when given a ``DpSgd``; the harness hands one to each client (``run.dp_sgd(round)``), seeds its
noise from the cell and accounts the privacy budget from the steps it counts.

Per-sample gradients come from opacus, in its functorch mode: its hook-based Conv2d sampler
returned zero gradients for some of a diffusers UNet's convolutions (those after an attention
block), which tests/unit/test_privacy.py would catch.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch


def draw_batch(data, size: int, records: int, noise_multiplier: float, generator: torch.Generator):
    """A batch of ``size`` images on average from ``data`` (a ClientData of ``records`` images):
    Poisson-sampled where there is noise to account; plain training's draw where σ = 0."""
    if noise_multiplier == 0:
        return data.sample_batch(size, generator)
    return data.poisson_batch(min(1.0, size / records), generator)


@dataclass
class DpSgd:
    """One client's DP-SGD for one ``fit``: the clip norm, the noise multiplier σ, the seeded
    stream the noise is drawn from and how many images the client holds. Counts what the
    accountant needs: the noised steps and their summed sampling rates."""

    clip: float
    noise_multiplier: float
    generator: torch.Generator
    records: int
    steps: int = 0
    rate_steps: float = 0.0
    _expected: float | None = None  # the expected batch of the step whose batch was drawn

    def draw(self, data, batch_size: int, generator: torch.Generator):
        """A step's batch from ``data`` (a ClientData): each image in independently with
        probability ``batch_size / records`` (Poisson sampling, what ε is accounted for). With
        σ = 0 nothing is claimed (ε = ∞): the batch is plain training's, so such a step is plain
        training's step when nothing is clipped."""
        if self.noise_multiplier > 0:
            self._expected = min(1.0, batch_size / self.records) * self.records
        return draw_batch(data, batch_size, self.records, self.noise_multiplier, generator)

    @contextlib.contextmanager
    def per_sample(self, model):
        """``model`` wrapped so that a backward pass also leaves each trainable parameter's
        per-sample gradients (``grad_sample``); unwrapped, hooks removed, on leaving. The loss
        must be the mean of per-image losses (as ``diffusion_loss`` is)."""
        from opacus import GradSampleModule

        wrapped = GradSampleModule(model, loss_reduction="mean", force_functorch=True)
        try:
            with warnings.catch_warnings():  # opacus's hooks warn on every backward of a first layer
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                warnings.filterwarnings("ignore", message="In CPU autocast")
                yield wrapped
        finally:
            wrapped._close()

    @staticmethod
    @contextlib.contextmanager
    def plain_pass(wrapped):
        """Passes of ``wrapped`` (``per_sample``'s) that compute no per-sample gradients: how a
        DP-SGD step's FLOPs are counted. torch's FLOP counter reads the grouped convolutions
        of functorch's per-sample gradients as dense ones: it counted 11.8x a plain step's FLOPs
        for the tiny UNet at batch 32, where a whole DP step takes 2.2x a plain step's time at
        28 px (4.2x at 8 px, where overheads dominate); so client_flops counts a DP step as a
        plain one (docs/privacy.md)."""
        wrapped.disable_hooks()
        try:
            yield
        finally:
            wrapped.enable_hooks()

    def privatize(self, params: list) -> None:
        """Turn each ``p.grad`` (the mean gradient of the b images drawn) into the DP-SGD
        gradient: the per-sample gradients each clipped to total norm ``clip``, summed, plus
        N(0, (σ·clip)²) noise, divided by the expected batch (by b where σ = 0). Written as
        ``(b·p.grad + Σ_i (c_i − 1) g_i + noise) / expected``, equal in exact arithmetic, so a
        step in which nothing is clipped and σ = 0 is bit-identical to plain training. A
        gradient term that is not per-image (a proximal term on the global model) stays
        unclipped: it depends on no private image."""
        samples = [p.grad_sample for p in params]
        batch = samples[0].shape[0]
        expected = self._take_expected(batch)
        norms = torch.sqrt(sum(g.reshape(batch, -1).pow(2).sum(1) for g in samples))
        excess = (self.clip / (norms + 1e-6)).clamp(max=1.0) - 1.0  # 0 where a gradient is within the clip
        clipped = bool((excess != 0).any())
        for p, g in zip(params, samples):
            if expected != batch:
                p.grad.mul_(batch / expected)
            if clipped:
                p.grad.add_(torch.einsum("i,i...->...", excess, g) / expected)
            if self.noise_multiplier > 0:
                noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype)
                p.grad.add_(noise.to(p.device) * (self.noise_multiplier * self.clip / expected))
            p.grad_sample = None
        self.steps += 1
        self.rate_steps += min(1.0, expected / self.records)

    def _take_expected(self, batch: int) -> float:
        expected, self._expected = self._expected, None
        if self.noise_multiplier == 0:
            return batch
        if expected is None:
            raise RuntimeError("a DP-SGD step with noise needs its batch drawn by DpSgd.draw (Poisson sampling: "
                               "what its privacy budget is accounted for)")
        return expected


@dataclass
class DpShare:
    """Record-level DP for tensors a client sends that each derive from one private image as
    ``x = a·x0 + s·z`` (z standard normal): split diffusion's ``x_cut``, an image noised by the
    forward process to the cut. Each ``x0`` is clipped to L2 norm ``s / (a·σ)``, so that each
    release is a Gaussian mechanism of multiplier σ under the relation DP-SGD's accounting uses
    (an image's contribution replaced by nothing: its signal 0); no noise is added beyond the
    forward process's, so the server receives tensors of the distribution it trains on (of
    shrunken images). Counts each release at its sampling rate, as ``DpSgd`` counts its steps."""

    noise_multiplier: float
    records: int
    steps: int = 0
    rate_steps: float = 0.0

    def draw(self, data, size: int, generator: torch.Generator):
        """``size`` images on average, Poisson-sampled (each image in with probability
        size / records): what a release's rate is accounted for. σ = 0: plain training's draw."""
        return draw_batch(data, size, self.records, self.noise_multiplier, generator)

    def clip(self, x0: torch.Tensor, signal: float, noise_std: float) -> torch.Tensor:
        """``x0`` with each image scaled down to norm at most ``noise_std / (signal·σ)`` (as it
        is where σ = 0: nothing is claimed)."""
        if self.noise_multiplier == 0:
            return x0
        bound = noise_std / (signal * self.noise_multiplier)
        norms = x0.flatten(1).norm(dim=1)
        factor = (bound / norms.clamp(min=1e-12)).clamp(max=1.0)
        return x0 * factor.view(-1, *([1] * (x0.dim() - 1)))

    def count(self, releases: int, expected: float) -> None:
        """``releases`` Poisson draws of ``expected`` images each went out (one per batch)."""
        self.steps += releases
        self.rate_steps += releases * min(1.0, expected / self.records)
