"""``[resources] compile``: the training loop steps ``torch.compile(model)``, checked first.

``compile = true`` compiles with inductor (fused kernels); a backend name chooses another of
torch's: ``"cudagraphs"`` replays CUDA graphs of the eager kernels, ``"aot_eager"`` only traces.

A small UNet on a GPU waits on the host's kernel launches; compiling fuses them. But a compiler
can be wrong, and a benchmark must not train on wrong gradients: before its first use in a
process, the compiled model's gradients on one fixed batch (the loop's ``dry_loss``) are
compared with eager mode's, on the same device and precision. A model they disagree on is
refused, the error giving the gap. (Measured with torch 2.13 on the CPU: inductor's gradients of
diffusers' UNet2DModel differ from eager's by 25-56 %, in float64 too, while its forward agrees
to 1e-6 and the backends without inductor's code generation agree to rounding;
``benchmarks/compile_gap.py`` prints the gaps. docs/performance.md, *Using the card*.)
"""

from __future__ import annotations

from typing import Callable

import torch

# the gap allowed, relative to the gradients' norm: rounding, not a different function
TOLERANCE = {"32-true": 1e-3, "bf16-mixed": 5e-2, "16-mixed": 5e-2}
_checked: dict = {}  # (model, batch shape, device, precision, backend) -> gap: once per process


class CompileMismatch(RuntimeError):
    """``torch.compile`` changes this model's gradients: train it without ``compile``."""


def check_backend(name: str) -> None:
    """A ``compile`` backend torch has (``torch._dynamo.list_backends``, debug ones included)."""
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if name not in known:
        raise ValueError(f"'compile' must be true, false or one of torch's backends ({', '.join(known)}), got {name!r}")


def compiled(model, fab, precision: str, backend: str, dry_loss: Callable | None, key: tuple):
    """``torch.compile(model, backend=backend)`` once its gradients match eager mode's
    (``gradient_gap``) in training mode; ``key`` (the model's layout and batch shape) says
    when the check must run again in this process."""
    if dry_loss is None:
        raise ValueError("'compile' needs fit's dry_loss (a fixed batch of the real one's shapes) to check "
                         "the compiled gradients on")
    fast = torch.compile(model, backend=backend)
    key = (type(model).__name__, *key, str(fab.device), precision, backend)
    if key not in _checked:
        model.train()  # the mode the loop trains in: a graph of eval mode would be another graph
        _checked[key] = gradient_gap(model, fast, fab, dry_loss)
    if not _checked[key] <= TOLERANCE[precision]:  # NaN fails too
        raise CompileMismatch(f"torch.compile ({backend}) changes this model's gradients by {_checked[key]:.1%} "
                              f"(relative to their norm) on {fab.device}, {precision}, torch {torch.__version__}: "
                              "train it without 'compile'")
    return fast


def gradient_gap(model, fast, fab, dry_loss: Callable) -> float:
    """‖g_compiled − g_eager‖ / ‖g_eager‖ over the trainable parameters, on one fixed batch
    (NaN where the compiled ones are not numbers); refused outright where the eager ones are
    not finite: there is nothing to compare against."""
    eager = gradients(fab.setup_module(model), model, fab, dry_loss)
    if not torch.isfinite(eager).all():
        raise CompileMismatch("cannot check torch.compile: eager mode's own gradients on the fixed batch are not "
                              "finite (in 16-mixed, the gradient scaler's scale may overflow them): train without "
                              "'compile'")
    fast_grads = gradients(fab.setup_module(fast), model, fab, dry_loss)
    gap = torch.linalg.vector_norm(fast_grads - eager) / torch.linalg.vector_norm(eager).clamp_min(1e-30)
    return float(gap)


def gradients(module, model, fab, dry_loss: Callable) -> torch.Tensor:
    """The trainable parameters' gradients of ``dry_loss`` through ``module`` (Fabric's
    backward, as the loop's), flattened (float64, on the CPU); the parameters' ``.grad`` and
    the CPU's RNG are left as they were."""
    params = [p for p in model.parameters() if p.requires_grad]
    kept = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.random.fork_rng(devices=[]):
            fab.backward(dry_loss(module, fab.device))
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().flatten().cpu()
                          for p in params])
    finally:
        for p, grad in zip(params, kept):
            p.grad = grad
