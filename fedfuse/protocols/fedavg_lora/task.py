"""Model and training of federated fine-tuning (LoRA adapters or the full model) of a
class-conditional diffusion model pre-trained on public data. No flwr here.

The base: a diffusers ``UNet2DModel`` with attention blocks and a class embedding, pre-trained
centrally on the dataset's *public* images, cached on disk by a hash of everything it depends
on. Clients fine-tune on their private images (classes unseen in pre-training, typically):
in ``lora`` mode only LoRA adapters on the attention projections (peft) plus the class
embedding — the new classes' vectors must be learnt somewhere — are trained and travel; in
``full`` mode every weight does.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict

from fedfuse.bench.cells import stable_hash
from fedfuse.bench.diffusion import build_scheduler, train
from fedfuse.bench.flops import FlopMeter

BASE_VERSION = "1"
EXTRA_TRAINED = ("class_embedding",)  # trained and sent along with the adapters in lora mode


def build_base(image_shape, num_classes: int, width: int, seed: int) -> UNet2DModel:
    channels, height, _ = image_shape
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=height, in_channels=channels, out_channels=channels,
            block_out_channels=(width, 2 * width), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=min(8, width), attention_head_dim=min(16, 2 * width), num_class_embeds=num_classes,
        )


# --- pre-training on public data, cached ------------------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("FEDFUSE_CACHE", Path.home() / ".cache" / "fedfuse")) / "bases"


def base_key(dataset: str, dataset_args: dict, cfg) -> str:
    return stable_hash({"version": BASE_VERSION, "dataset": dataset, "dataset_args": dataset_args,
                        "width": cfg.width, "timesteps": cfg.timesteps, "steps": cfg.pretrain_steps,
                        "batch_size": cfg.batch_size, "lr": cfg.pretrain_lr, "seed": cfg.pretrain_seed})


def pretrained_base(dataset: str, dataset_args: dict, data, public_view, cfg, progress=None) -> tuple[UNet2DModel, dict]:
    """The cached base for this config, pre-training it first if needed. Returns (model, card):
    the card records the pre-training's cost (FLOPs, seconds), kept apart from the federated run."""
    folder = cache_root() / base_key(dataset, dataset_args, cfg)
    model = build_base(data.image_shape, len(data.class_names), cfg.width, cfg.pretrain_seed)
    if (folder / "card.json").is_file():
        model.load_state_dict(torch.load(folder / "unet.pt", weights_only=True))
        return model, json.loads((folder / "card.json").read_text())
    card = pretrain(model, public_view, cfg, progress)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "unet.pt.tmp")
    (folder / "unet.pt.tmp").replace(folder / "unet.pt")
    (folder / "card.json").write_text(json.dumps({**card, "key": folder.name}, indent=1))  # written last: marks complete
    return model, card


def cached_base(dataset: str, dataset_args: dict, cfg) -> UNet2DModel:
    """A client's copy of the base, from the cache (clients are assumed to have it)."""
    from fedfuse.datasets.loading import load

    folder = cache_root() / base_key(dataset, dataset_args, cfg)
    if not (folder / "card.json").is_file():
        raise FileNotFoundError(f"this client has no copy of the base model ({folder}); set base_on_clients = false "
                                "to have the server send it")
    return base_from_state(load(dataset, dataset_args), cfg, torch.load(folder / "unet.pt", weights_only=True))


def base_from_state(data, cfg, state: dict) -> UNet2DModel:
    model = build_base(data.image_shape, len(data.class_names), cfg.width, cfg.pretrain_seed)
    model.load_state_dict(state)
    return model


def pretrain(model, public_view, cfg, progress=None) -> dict:
    meter, start = FlopMeter(), time.time()
    scheduler, generator = build_scheduler(cfg.timesteps), torch.Generator().manual_seed(cfg.pretrain_seed)
    chunk = max(1, cfg.pretrain_steps // 20)
    losses = []
    for done in range(0, cfg.pretrain_steps, chunk):
        steps = min(chunk, cfg.pretrain_steps - done)
        losses.append(train(model, scheduler, public_view, steps, cfg.batch_size, cfg.pretrain_lr, generator,
                            meter, conditional=True))
        if progress:
            progress(f"pre-training the base {done + steps}/{cfg.pretrain_steps} (loss {losses[-1]:.3f})")
    return {"pretrain_flops": meter.take()["flops_train"], "pretrain_s": time.time() - start,
            "pretrain_steps": cfg.pretrain_steps, "pretrain_images": len(public_view), "final_loss": losses[-1]}


# --- what is trained and what travels -------------------------------------------------------

def lora_config(cfg) -> LoraConfig:
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.targets), lora_dropout=0.0)


def add_adapters(model: UNet2DModel, cfg) -> UNet2DModel:
    """LoRA on the attention projections; base frozen; the class embedding trainable too."""
    model = inject_adapter_in_model(lora_config(cfg), model)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name or name.startswith(EXTRA_TRAINED)
    return model


def trainable_state(model, mode: str) -> dict[str, torch.Tensor]:
    """What a client sends: the adapters (and class embedding), or the whole model."""
    if mode == "full":
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = get_peft_model_state_dict(model)
    state.update({k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(EXTRA_TRAINED)})
    return state


def load_trainable_state(model, state: dict[str, torch.Tensor], mode: str) -> None:
    if mode == "full":
        model.load_state_dict(state)
        return
    extra = {k: v for k, v in state.items() if k.startswith(EXTRA_TRAINED)}
    set_peft_model_state_dict(model, {k: v for k, v in state.items() if k not in extra})
    model.load_state_dict(extra, strict=False)


def fine_tune_model(base: UNet2DModel, cfg) -> UNet2DModel:
    """A copy of the base ready for fine-tuning in the config's mode."""
    import copy

    model = copy.deepcopy(base)
    if cfg.mode == "lora":
        return add_adapters(model, cfg)
    return model.requires_grad_(True)


# --- the two bases: fedfuse's small conditional UNet, or a user's Stable Diffusion ------------

class Backbone:
    """What fine-tuning works on: a class-conditional ``denoiser`` over inputs of ``shape``;
    ``encode`` maps dataset images to those inputs (identity, or VAE latents) and ``decode``
    back to images of the dataset's shape. ``card`` is the base's pre-training cost."""

    def __init__(self, denoiser, shape, encode=lambda x: x, decode=lambda x: x, card=None):
        self.denoiser, self.shape, self.encode, self.decode = denoiser, shape, encode, decode
        self.card = card or {"pretrain_flops": 0.0, "pretrain_s": 0.0}


def stable_diffusion_backbone(cfg, data) -> Backbone:
    from fedfuse.protocols.fedavg_lora.sd import StableDiffusionBase

    sd = StableDiffusionBase(cfg.model_path, data.class_names)
    return Backbone(sd.denoiser, sd.latent_shape, sd.encode, lambda x: sd.decode(x, data.image_shape))
