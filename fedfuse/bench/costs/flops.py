"""FLOPs from torch's own counter, measured once per distinct step and multiplied by the count.

Wrap each step of work in ``meter.step(kind, key)``: the first step with a given
(kind, key) runs under ``torch.utils.flop_counter.FlopCounterMode`` and its FLOPs are kept;
later ones only add that number, so counting costs (almost) nothing after the first step.
``key`` must change whenever the work does (batch shape, model); ``kind`` is "train" (forward
and backward inside the block) or "sample". Optimizer updates are elementwise and not counted.
FlopCounterMode changes the last bits of a backward pass (it decomposes some operators), so the
ClientApp restarts its meter on every message: the measured step is then always a message's
first, in every engine.

The toolkit's training loop does better (``dry_step``): it measures a throwaway step on fixed
inputs, once per process and cell, and runs every real step uncounted, so no result depends on
the counter and a message's first step costs no more than the others.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode

KINDS = ("train", "sample")
_DRY: dict[tuple, int] = {}  # dry-step FLOPs per (scope, kind, key), for this process's life


class FlopMeter:
    """Counts a party's training and sampling FLOPs. The harness hands one to every client
    (``run.flops`` of a ClientRun) and to the server (``run.flops`` of a ServerRun); the
    toolkit's ``train``/``fit``/``sample`` take it as ``flops=`` and count every step. Work
    done outside the toolkit is counted by wrapping each step::

        with run.flops.step("train", key=batch.shape):
            loss = ...; loss.backward()
    """

    def __init__(self, scope: str | None = None):
        self.per_step: dict[tuple, int] = {}
        self._totals: dict[str, float] = defaultdict(float)
        self._examples = 0  # training images processed (optimizer steps x batch): a track's budget
        #: the cell this meter counts for (the harness sets it): dry-step figures are kept per
        #: process and scope, so a later message of the cell reuses them. None: per message.
        self.scope = scope

    def dry_step(self, kind: str, key, steps: int, measure) -> None:
        """Count ``steps`` steps of ``kind`` whose FLOPs ``measure()`` performs once, under the
        counter, on inputs of the same shapes: once per (scope, kind, key) in this process
        (``measure`` must leave no trace in the real computation: no RNG drawn, no state)."""
        cache, full_key = (_DRY, (self.scope, kind, key)) if self.scope is not None else (self.per_step, (kind, key))
        if full_key not in cache:
            with FlopCounterMode(display=False) as counter:
                measure()
            cache[full_key] = counter.get_total_flops()
        self._totals[kind] += cache[full_key] * steps

    @contextmanager
    def step(self, kind: str, key=()):
        if kind not in KINDS:
            raise ValueError(f"FLOP kind must be one of {KINDS}, got {kind!r}")
        known = self.per_step.get((kind, key))
        if known is not None:
            yield
            self._totals[kind] += known
            return
        with FlopCounterMode(display=False) as counter:
            yield
        self.per_step[(kind, key)] = counter.get_total_flops()
        self._totals[kind] += self.per_step[(kind, key)]

    def count_examples(self, n: int) -> None:
        """``n`` more training images processed (the toolkit's ``fit``: steps x batch size)."""
        self._examples += int(n)

    def take_examples(self) -> int:
        """Training images processed since the last call, then reset."""
        n, self._examples = self._examples, 0
        return n

    def restart(self) -> dict[str, float]:
        """Forget the measured steps and return (then reset) the totals: the next step of each
        key is measured again."""
        self.per_step.clear()
        self._examples = 0
        return self.take()

    def take(self) -> dict[str, float]:
        """FLOPs per kind since the last call (``flops_train``, ``flops_sample``), then reset."""
        out = {f"flops_{k}": float(self._totals.get(k, 0.0)) for k in KINDS}
        self._totals.clear()
        return out


@torch.no_grad()
def denoiser_call_flops(model, image_shape: tuple, passes: int = 1, conditional: bool | None = None) -> float:
    """FLOPs of one denoiser call ``model(x, t[, class_labels=...])`` on one input of
    ``image_shape`` (``passes`` inputs: 2 under classifier-free guidance), counted by torch.
    ``conditional`` None: read from a diffusers UNet2DModel's ``num_class_embeds``."""
    if conditional is None:
        conditional = bool(getattr(getattr(model, "config", None), "num_class_embeds", None))
    x, t = torch.zeros((passes, *image_shape)), torch.tensor(1)
    kwargs = {"class_labels": torch.zeros(passes, dtype=torch.long)} if conditional else {}
    with FlopCounterMode(display=False) as counter:
        model(x, t, **kwargs)
    return float(counter.get_total_flops())
