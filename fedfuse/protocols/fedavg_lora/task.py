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
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)

from fedfuse.api import (
    PRESETS,
    Ema,
    FlopMeter,
    Recipe,
    build_scheduler,
    build_unet,
    sample,
    stable_hash,
    train,
    write_atomic,
)

from fedfuse.protocols.fedavg_lora.aggregation import sent_keys

BASE_VERSION = "2"
ADAPTER_SEED_SALT = 1  # the adapters' initialisation: the same on the server and every client (FFA-LoRA's A)
EXTRA_TRAINED = ("class_embedding",)  # trained and sent along with the adapters in lora mode


def build_base(image_shape, num_classes: int, preset: str, seed: int) -> UNet2DModel:
    """The preset's UNet, class-conditional, always with attention (what LoRA adapts): at the
    lowest resolution where the preset has none, at every one with ``base-attn``."""
    return build_unet(image_shape, preset, seed, classes=num_classes, attention=PRESETS[preset]["attention"] or True)


# --- pre-training on public data, cached ------------------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("FEDFUSE_CACHE", Path.home() / ".cache" / "fedfuse")) / "bases"


def base_key(dataset: str, dataset_args: dict, cfg) -> str:
    return stable_hash({"version": BASE_VERSION, "dataset": dataset, "dataset_args": dataset_args,
                        "model": cfg.model, "timesteps": cfg.timesteps, "steps": cfg.pretrain_steps,
                        "recipe": pretrain_recipe(cfg).__dict__, "seed": cfg.pretrain_seed})


def pretrain_recipe(cfg) -> Recipe:
    return Recipe(cfg.pretrain_lr, cfg.batch_size, cfg.warmup_steps, cfg.ema_decay)


def pretrained_base(dataset: str, dataset_args: dict, data, public_view, cfg, progress=None,
                    resources=None) -> tuple[UNet2DModel, dict]:
    """The cached base for this config, pre-training it first if needed. Returns (model, card):
    the card records the pre-training's cost (FLOPs, seconds), kept apart from the federated run."""
    folder = cache_root() / base_key(dataset, dataset_args, cfg)
    model = build_base(data.image_shape, len(data.class_names), cfg.model, cfg.pretrain_seed)
    if (folder / "card.json").is_file():
        model.load_state_dict(torch.load(folder / "unet.pt", weights_only=True))
        return model, json.loads((folder / "card.json").read_text())
    card = pretrain(model, public_view, cfg, progress, resources)
    folder.mkdir(parents=True, exist_ok=True)
    # Whole files only (concurrent cells may pre-train the same base); the card last: it marks the base complete.
    write_atomic(folder / "unet.pt", lambda tmp: torch.save(model.state_dict(), tmp))
    write_atomic(folder / "card.json", lambda tmp: tmp.write_text(json.dumps({**card, "key": folder.name}, indent=1)))
    return model, card


def cached_base(dataset: str, dataset_args: dict, cfg) -> UNet2DModel:
    """A client's copy of the base, from the cache (clients are assumed to have it)."""
    from fedfuse.api import load_dataset as load

    folder = cache_root() / base_key(dataset, dataset_args, cfg)
    if not (folder / "card.json").is_file():
        raise FileNotFoundError(f"this client has no copy of the base model ({folder}); set base_on_clients = false "
                                "to have the server send it")
    return base_from_state(load(dataset, dataset_args), cfg, torch.load(folder / "unet.pt", weights_only=True))


def base_from_state(data, cfg, state: dict) -> UNet2DModel:
    model = build_base(data.image_shape, len(data.class_names), cfg.model, cfg.pretrain_seed)
    model.load_state_dict(state)
    return model


def pretrain(model, public_view, cfg, progress=None, resources=None) -> dict:
    """Pre-train ``model`` in place; it ends holding the EMA weights (the base clients start from)."""
    meter, start = FlopMeter(), time.time()
    scheduler, generator = build_scheduler(cfg.timesteps), torch.Generator().manual_seed(cfg.pretrain_seed)
    chunk, ema, recipe = max(1, cfg.pretrain_steps // 20), Ema(model, cfg.ema_decay), pretrain_recipe(cfg)
    losses = []
    for done in range(0, cfg.pretrain_steps, chunk):
        steps = min(chunk, cfg.pretrain_steps - done)
        losses.append(train(model, scheduler, public_view, steps, recipe, generator, resources, meter,
                            conditional=True, start_step=done, ema=ema))
        if progress:
            progress(f"pre-training the base {done + steps}/{cfg.pretrain_steps} (loss {losses[-1]:.3f})")
    model.load_state_dict(ema.model.state_dict())
    return {"pretrain_flops": meter.take()["flops_train"], "pretrain_examples": meter.take_examples(),
            "pretrain_s": time.time() - start,
            "pretrain_steps": cfg.pretrain_steps, "pretrain_images": len(public_view), "final_loss": losses[-1]}


# --- what is trained and what travels -------------------------------------------------------

#: names a ``targets`` entry may use for a group of modules ("attn+conv": both)
TARGET_GROUPS = {"attn": ("to_q", "to_k", "to_v", "to_out.0"),  # every attention projection
                 "conv": ("conv1", "conv2")}  # the ResNet blocks' 3x3 convolutions


def target_modules(targets) -> list[str]:
    """``targets`` with each group name (``TARGET_GROUPS``, joined by "+") spelled out."""
    names = [name for entry in targets for part in entry.split("+") for name in TARGET_GROUPS.get(part, (part,))]
    return list(dict.fromkeys(names))


def lora_config(cfg) -> LoraConfig:
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=target_modules(cfg.targets), lora_dropout=0.0)


def add_adapters(model: UNet2DModel, cfg) -> UNet2DModel:
    """LoRA on the ``targets`` (the attention projections by default); base frozen; the class
    embedding trainable too.
    With FFA-LoRA (``aggregation = "ffa"``) the A factors stay frozen at their initialisation."""
    model = inject_adapter_in_model(lora_config(cfg), model)
    frozen = "lora_A" if cfg.aggregation == "ffa" else None
    for name, param in model.named_parameters():
        trained = "lora_" in name or name.startswith(EXTRA_TRAINED)
        param.requires_grad = trained and not (frozen and frozen in name)
    return model


def trainable_state(model, mode: str, aggregation: str = "fedavg-ab") -> dict[str, torch.Tensor]:
    """What a client sends: the adapters (and class embedding; with ``ffa`` B only), or the
    whole model."""
    if mode == "full":
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = get_peft_model_state_dict(model)
    state.update({k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(EXTRA_TRAINED)})
    return sent_keys(state, aggregation)


def load_trainable_state(model, state: dict[str, torch.Tensor], mode: str) -> None:
    if mode == "full":
        model.load_state_dict(state)
        return
    extra = {k: v for k, v in state.items() if k.startswith(EXTRA_TRAINED)}
    set_peft_model_state_dict(model, {k: v for k, v in state.items() if k not in extra})
    model.load_state_dict(extra, strict=False)


def fine_tune_model(base: UNet2DModel, cfg, seed: int = 0) -> UNet2DModel:
    """A copy of the base ready for fine-tuning in the config's mode. The adapters' initial
    weights depend only on ``seed`` (peft draws them from torch's global RNG, whose state
    would otherwise depend on what ran before in the process: a base pre-trained here or
    loaded from the cache gave different models)."""
    import copy

    model = copy.deepcopy(base)
    if cfg.mode == "lora":
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return add_adapters(model, cfg)
    return model.requires_grad_(True)


# --- the two bases: fedfuse's small conditional UNet, or a user's Stable Diffusion ------------

class Backbone:
    """What fine-tuning works on: a class-conditional ``denoiser`` over inputs of ``shape``,
    trained and sampled with the noise ``scheduler`` it was pre-trained with (its betas, length
    and prediction type); ``encode`` maps dataset images to those inputs (identity, or VAE
    latents) and ``decode`` the sampler's outputs back to images in [-1, 1] of the dataset's
    shape. ``null_label`` is the label of the empty condition (classifier-free guidance), None
    when the base has none. ``card`` is the base's pre-training cost."""

    def __init__(self, denoiser, shape, scheduler, encode=lambda x: x, decode=lambda x: x.clamp(-1, 1),
                 null_label: int | None = None, card=None):
        self.denoiser, self.shape, self.scheduler, self.encode, self.decode = denoiser, shape, scheduler, encode, decode
        self.null_label = null_label
        self.card = card or {"pretrain_flops": 0.0, "pretrain_s": 0.0}

    @property
    def train_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps


def small_backbone(base: UNet2DModel, cfg, image_shape, card=None) -> Backbone:
    """fedfuse's own base: images as they are, the DDPM schedule it was pre-trained with, no null class."""
    return Backbone(base, image_shape, build_scheduler(cfg.timesteps), card=card)


def stable_diffusion_backbone(cfg, data) -> Backbone:
    from fedfuse.protocols.fedavg_lora.sd import StableDiffusionBase

    sd = StableDiffusionBase(cfg.model_path, data.class_names)
    return Backbone(sd.denoiser, sd.latent_shape, sd.scheduler, sd.encode, lambda x: sd.decode(x, data.image_shape),
                    null_label=sd.null_label)


def generate(backbone: Backbone, model, labels: torch.Tensor, guidance: float, steps: int, kind: str, seed: int,
             resources=None) -> torch.Tensor:
    """Images of classes ``labels`` from ``model`` (the backbone's denoiser, fine-tuned): the
    suite's ``kind`` sampler built from the backbone's scheduler, classifier-free guided at
    ``guidance`` (1: plain conditional) against its null condition, then decoded."""
    raw = sample(model, len(labels), backbone.shape, backbone.scheduler, steps, kind, seed=seed, resources=resources,
                 guidance=guidance, null_label=backbone.null_label, clamp=False, class_labels=labels)
    return backbone.decode(raw)  # clamped there: latents must not be clamped as images are
