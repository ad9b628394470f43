"""What DP-SGD adds to a training step: the shared step (``TrainStep``: batch draw, forward,
backward, AdamW, EMA) with and without DP-SGD (Poisson batch, opacus's per-sample gradients,
clipping, seeded noise), batch 64 expected. docs/privacy.md quotes the ratio:
``bash scripts/bench.sh -k dp_step``."""

import pytest
from benchutil import FULL, record

from fedfuse.bench.costs.steptime import TrainStep

STEPS = 5 if FULL else 1
SIZES = [("tiny", 8), ("small", 28)] if FULL else [("tiny", 8)]


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp"])
@pytest.mark.parametrize("preset, side", SIZES)
def test_dp_step(benchmark, preset, side, dp):
    step = TrainStep(preset, side, batch=64, images=512 if FULL else 64, dp=dp)
    step.warm_up(1)
    benchmark.pedantic(lambda: step.run(STEPS), rounds=3, iterations=1)
    record(benchmark, f"{'dp' if dp else 'plain'}_step_{preset}_{side}")


def test_flop_counter_reading_of_per_sample_gradients():
    """Why client_flops counts a DP step as a plain one: torch's counter reads functorch's grouped
    convolutions as dense (docs/privacy.md quotes this ratio, 11.8x for tiny at batch 32)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fedfuse.toolkit.ddpm import build_scheduler, diffusion_loss
    from fedfuse.toolkit.models import build_unet
    from fedfuse.toolkit.privacy import DpSgd

    model, scheduler = build_unet((1, 8, 8), "tiny", 0, classes=10), build_scheduler(1000)
    images, labels = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))

    def counted(module) -> int:
        with FlopCounterMode(display=False) as counter:
            diffusion_loss(module, scheduler, images, torch.Generator().manual_seed(0), labels).backward()
        return counter.get_total_flops()

    plain = counted(model)
    with DpSgd(1.0, 1.0, torch.Generator(), records=100).per_sample(model) as wrapped:
        ratio = counted(wrapped) / plain
    print(f"\nFLOP counter: a per-sample-gradient pass reads {ratio:.1f}x a plain one (tiny, 8 px, batch 32)")
    assert ratio > 2  # the overcount the docs describe; were it gone, count DP steps as measured
