"""Where training and sampling run: Lightning Fabric over a suite's ``[resources]``.

One Fabric per process and setting. Random draws (batches, timesteps, noise) stay on the
CPU's seeded generators and are moved to the device, so a CPU run is bit-reproducible and a
GPU run draws the same numbers. The moves go through pinned memory without waiting
(``to_device``): the shared recipe's step (fp32 or bf16, without DP-SGD) never stops the host
to wait for the card.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

ACCELERATORS = ("auto", "cpu", "cuda")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class Resources:
    """A suite's ``[resources]`` table (and ``fedfuse run`` flags of the same names)."""

    accelerator: Literal["auto", "cpu", "cuda"] = "cpu"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    gpus_per_client: float = 0.0  # Ray's num_gpus per ClientApp (fractional: clients share a GPU)
    cpus_per_client: int = 1  # Ray's num_cpus per ClientApp, and its torch threads
    compile: bool | str = False  # torch.compile what fit steps: true (inductor) or a backend name (toolkit.compiling)

    def __post_init__(self):
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"'accelerator' must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"'precision' must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.gpus_per_client < 0 or self.cpus_per_client < 1:
            raise ValueError("'gpus_per_client' must be >= 0 and 'cpus_per_client' >= 1")
        if self.compile in ("true", "false"):  # as a command line gives it: stored as the suite's TOML would
            object.__setattr__(self, "compile", self.compile == "true")
        if isinstance(self.compile, str) and self.compile:  # checked once, here: the backend torch has
            from fedfuse.toolkit.compiling import check_backend

            check_backend(self.compile)

    @property
    def compile_backend(self) -> str | None:
        """torch.compile's backend for ``compile``: None when off, ``inductor`` for true."""
        return "inductor" if self.compile is True else (self.compile or None)


def fabric(resources: Resources | None = None):
    """The process's Fabric for these resources (``auto`` takes a GPU where there is one)."""
    r = resources or Resources()
    return _fabric(r.accelerator, r.precision)


@functools.lru_cache(maxsize=4)
def _fabric(accelerator: str, precision: str):
    import logging

    from lightning_fabric import Fabric

    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)  # no "GPU available" lines per process
    if accelerator == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("accelerator = 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return Fabric(accelerator=accelerator, devices=1, precision=precision)


def to_device(tensor, device):
    """``tensor`` on ``device``. From the CPU to a GPU through a pinned copy, asynchronously: a
    plain copy from pageable memory waits for everything queued on the card first. Pass a fresh
    tensor, as a draw is: a tensor already pinned is copied from in place, so changing it before
    the card has read it would change what arrives."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def torch_device(resources: Resources | None = None):
    """The torch device these resources train on (``run.device``: for work outside ``fit``)."""
    return fabric(resources).device


def describe(resources: Resources | None = None) -> dict:
    """The system a cell ran on: device kind, name, count and memory, precision, the compile
    backend where one is on (MLPerf-style)."""
    import torch

    f, r = fabric(resources), resources or Resources()
    out = {"device": f.device.type, "precision": r.precision}
    if r.compile_backend:
        out["compile"] = r.compile_backend
    if f.device.type == "cuda":
        props = torch.cuda.get_device_properties(f.device)
        out.update(device_name=props.name, device_count=torch.cuda.device_count(),
                   device_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        import platform

        out.update(device_name=platform.processor() or platform.machine(), device_count=1,
                   torch_threads=torch.get_num_threads())
    return out
