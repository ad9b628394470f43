"""How far torch.compile's backends move the tiny UNet's forward and gradients from eager mode's,
on the CPU, in float32 and float64: what docs/performance.md (*Using the card*) states about
inductor, and what ``[resources] compile``'s check (``fedfuse.toolkit.compiling``) refuses.

    .venv/bin/python benchmarks/compile_gap.py      # 30 s, or 2-3 minutes where inductor has not yet compiled its C++ here

One fixed batch (8 images, 8 px, seeded) and a plain loss (MSE of the output to the input; the
recipe's loss targets the noise, which changes nothing here); ``forward``: the largest absolute
difference of the outputs; ``gradients``: the gradients' difference relative to their norm, the
check's measure (the check itself runs fedfuse's loss through Fabric).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedfuse.toolkit.models import build_unet

BACKENDS = ("inductor", "aot_eager", "aot_eager_decomp_partition")


def gradients(model, forward, x, t) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = forward(x, t).sample
    F.mse_loss(out, x).backward()
    return out.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


def main() -> None:
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = build_unet((1, 8, 8), "tiny", 0).to(dtype)
        x, t = torch.randn(8, 1, 8, 8, dtype=dtype), torch.randint(0, 200, (8,))
        out, grads = gradients(model, model, x, t)
        for backend in BACKENDS:
            torch._dynamo.reset()
            fast_out, fast_grads = gradients(model, torch.compile(model, backend=backend), x, t)
            gap = float(torch.linalg.vector_norm(fast_grads - grads) / torch.linalg.vector_norm(grads))
            print(f"{str(dtype):14} {backend:28} forward {float((fast_out - out).abs().max()):.1e}  "
                  f"gradients {gap:.1e} of their norm", flush=True)


if __name__ == "__main__":
    main()
