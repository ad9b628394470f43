"""Registers split-diffusion (CollaFuse) and its baselines local-only and centralized."""

from dataclasses import dataclass
from typing import ClassVar, Literal

from fedfuse.api import (
    DdpmConfig,
    MetricSpec,
    ProtocolSpec,
    StudySpec,
    check_preset,
    hookimpl,
    require_positive,
)


@dataclass
class SplitCommon(DdpmConfig):
    """``model`` is the server's UNet preset (the high-noise part), ``client_model`` the clients'."""

    local_steps: int = 20  # a client's optimizer steps per round on its own denoiser
    # What a client sends each round: "batches" (CollaFuse's way) the cut-noised copy of every
    # batch it trained on; "subset" a fresh draw of share_size images.
    share: Literal["batches", "subset"] = "batches"
    share_size: int = 64  # images a client noises to the cut and sends per round (share = "subset")
    server_pool: int = 20000  # received images the server keeps across rounds (newest first)
    # The server's optimizer steps per round; 0: one step per batch_size images received this
    # round (with share = "batches", as many steps as all clients took together).
    server_steps: int = 0
    client_model: str = "small"  # clients' UNet preset (the low-noise part)
    condition: str = "none"  # "none", "label" or a dataset attribute: both sides' models take it
    # Classifier-free guidance scale at sampling (1: plain conditional). 1 by default: at 2 a
    # tiny digits model made its asked class less often the longer it trained (0.99 -> 0.66 for
    # a 0 from 1,000 to 3,000 steps; at 1: 0.95 -> 0.97; scripts/guidance_probe.py).
    guidance: float = 1.0
    cond_dropout: float = 0.1  # training: probability that an image's condition is replaced by "none"

    @property
    def conditional(self) -> bool:
        """Whether the deployed models generate the classes asked for (what a conditional track
        needs; the harness refuses a config that does not before anything runs)."""
        return self.condition == "label"

    def __post_init__(self):
        super().__post_init__()
        check_preset(self.client_model)
        require_positive(self, "local_steps", "share_size", "server_pool")
        if self.server_steps < 0:
            raise ValueError(f"'server_steps' must be >= 0 (0: follow the data received), got {self.server_steps}")
        if not 0.0 <= self.cond_dropout < 1.0 or self.guidance < 0:
            raise ValueError(f"'cond_dropout' must be in [0, 1) and 'guidance' >= 0, got {self.cond_dropout} "
                             f"and {self.guidance}")

    def cut_of(self, client: int) -> float:
        """The cut ratio of client (partition) ``client``."""
        return self.cut_ratios[client] if self.cut_ratios else self.cut_ratio


@dataclass
class SplitConfig(SplitCommon):
    cut_ratio: float = 0.4  # the server's share of the timeline: t_c = round((1 - c) * T)
    cut_ratios: tuple[float, ...] = ()  # one per client (by partition id), overriding cut_ratio
    marginal: Literal["exact", "reference"] = "exact"  # how the server noises x_cut further (see task.py)

    def __post_init__(self):
        super().__post_init__()
        for name, c in [("cut_ratio", self.cut_ratio)] + [(f"cut_ratios[{i}]", c) for i, c in enumerate(self.cut_ratios)]:
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"'{name}' must be in [0, 1], got {c}")

    def check_clients(self, clients: int) -> None:
        if self.cut_ratios and len(self.cut_ratios) != clients:
            raise ValueError(f"'cut_ratios' has {len(self.cut_ratios)} entries for {clients} clients; "
                             "give one per client, or a single 'cut_ratio'")


@dataclass
class LocalOnlyConfig(SplitCommon):
    cut_ratio: ClassVar[float] = 0.0  # each client alone, the whole timeline; nothing shared
    cut_ratios: ClassVar[tuple] = ()
    marginal: ClassVar[str] = "exact"


@dataclass
class CentralizedConfig(SplitCommon):
    cut_ratio: ClassVar[float] = 1.0  # the server runs the whole timeline and sends each client its images
    cut_ratios: ClassVar[tuple] = ()


@hookimpl
def fedfuse_add_protocols():
    split = {"server": "fedfuse.protocols.split_diffusion.server_loop:split_server",
             "client_app": "fedfuse.protocols.split_diffusion.client_app:app",
             "reply_check": "fedfuse.protocols.split_diffusion.replies:check_shared", "partial_participation": True}
    return [
        ProtocolSpec(name="split-diffusion", version="5", config=SplitConfig, dp=("record",), **split,
                     summary="CollaFuse: clients keep data and low-noise steps; the server trains and runs the rest"),
        ProtocolSpec(name="local-only", version="4", config=LocalOnlyConfig, dp=("record",), **split,
                     summary="baseline: each client trains and samples alone (split diffusion at cut ratio 0)", bound=True),
        ProtocolSpec(name="centralized", version="4", config=CentralizedConfig,
                     server="fedfuse.protocols.split_diffusion.centralized:centralized",
                     client_app="fedfuse.protocols.split_diffusion.client_app:app", bound=True,
                     summary="baseline: all clients' images uploaded once; one model trained on the server"),
    ]


@hookimpl
def fedfuse_add_metrics():
    return [
        MetricSpec("server_loss", "mse", higher_is_better=False, aggregate="last",
                   summary="split: the server denoiser's loss on the shared x_cut pool"),
        MetricSpec("server_steps", "count", higher_is_better=False, aggregate="sum",
                   summary="split: the server's optimizer steps (per round: follows the images received)"),
        MetricSpec("disclosed_conditions", "count", higher_is_better=False, aggregate="last",
                   summary="split: conditions (labels/attributes) the server received from a client in the last round"),
        MetricSpec("raw_data_off_device", "", higher_is_better=False, aggregate="last",
                   summary="1 if clients' clean images left the device (centralized; split at c = 1), else 0"),
        MetricSpec("cut_ratio", "", higher_is_better=False, aggregate="last",
                   summary="split: the server's share c of the timeline (mean over clients)"),
        # what the server could learn of a client's images from what it received (run.disclosure_sets)
        *(MetricSpec(f"disclosure_{m}_{what}{ref}", "", higher_is_better=True, aggregate="last",
                     summary=f"{m.upper()} of {about} against the client's {against} (higher = less disclosed)")
          for m in ("fid", "kid")
          for what, about in (("cut", "the x_cut the server received"), ("rescaled", "received x_cut rescaled"),
                              ("approx", "the server's model carrying received x_cut to x_0"),
                              ("fresh", "the server's model's own samples carried to x_0"))
          for ref, against in (("", "private images"), ("_heldout", "held-out images of its classes (reference)"))),
    ]


@hookimpl
def fedfuse_add_studies():
    return [StudySpec(
        "seed-split-diffusion", protocol="split-diffusion",
        summary="CollaFuse's cut-ratio sweep against local-only, centralized and FedAvg, with its three claims",
        columns=("cut_ratio", "server_flops", "client_gen_flops", "nn_mse", "nn_ssim", "disclosure_fid_cut",
                 "disclosure_fid_approx", "disclosure_fid_approx_heldout", "disclosure_fid_fresh"),
        panels=(("cut_ratio", "client_flops"), ("cut_ratio", "disclosure_fid_approx"), ("cut_ratio", "fid")),
        claims="fedfuse.protocols.split_diffusion.claims:claims")]
