"""A user's Stable Diffusion (a local diffusers-format pipeline directory) as the base.

The denoiser is the pipeline's UNet, wrapped so that it takes class labels like fedfuse's own
base: each class becomes the prompt "a photo of a <class name>", encoded once by the pipeline's
CLIP text encoder, and one more label, ``null_label``, is the empty prompt "" (the unconditional
branch of classifier-free guidance). Images are trained on and generated in the VAE's latent
space, with the pipeline's own noise schedule (``scheduler/``: betas, length, prediction type),
not fedfuse's. Nothing is downloaded: a hub id instead of a directory fails with a message that
says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
NULL_PROMPT = ""  # the unconditional prompt, as diffusers' pipelines encode it for guidance


def check_dir(model_path: str) -> Path:
    path = Path(model_path).expanduser()
    missing = [p for p in PARTS if not (path / p).is_dir()]
    if not path.is_dir() or missing:
        raise FileNotFoundError(
            f"model_path '{model_path}' is not a local diffusers Stable Diffusion directory "
            f"(missing: {', '.join(missing) if path.is_dir() else 'the directory'}); fedfuse loads nothing from a "
            "hub at run time: download the pipeline where you have network (pipe.save_pretrained(dir)) and point here")
    return path


class PromptConditioned(nn.Module):
    """UNet2DConditionModel called as ``model(x, t, class_labels=y)``: y picks a prompt embedding
    (a row of ``prompt_embeds``: the classes' prompts, then the empty prompt)."""

    def __init__(self, unet, prompt_embeds: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)

    def forward(self, x, t, class_labels=None):
        return self.unet(x, t, encoder_hidden_states=self.prompt_embeds[class_labels])


class StableDiffusionBase:
    """The loaded pipeline parts a client or the server needs."""

    def __init__(self, model_path: str, class_names: tuple[str, ...]):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        path = check_dir(model_path)
        self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae").eval().requires_grad_(False)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        text = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").eval()
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet")
        prompts = [*class_prompts(class_names), NULL_PROMPT]
        self.denoiser = PromptConditioned(unet.requires_grad_(False), encode_prompts(tokenizer, text, prompts))
        self.null_label = len(class_names)  # the empty prompt's row
        self.scheduler = load_scheduler(path)
        self.image_size = unet.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Images in [-1, 1] (any channels/size) -> scaled VAE latents."""
        x = images.repeat(1, 3 // images.shape[1], 1, 1) if images.shape[1] == 1 else images
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        scale = self.vae.config.scaling_factor
        return torch.cat([self.vae.encode(b).latent_dist.mean * scale for b in x.split(batch_size)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """Latents -> images in [-1, 1] of the dataset's shape (for its feature space)."""
        x = torch.cat([self.vae.decode(b / self.vae.config.scaling_factor).sample for b in latents.split(64)])
        x = F.interpolate(x.clamp(-1, 1), size=shape[1:], mode="bilinear", align_corners=False)
        return x.mean(1, keepdim=True) if shape[0] == 1 else x


def class_prompts(class_names) -> list[str]:
    return [f"a photo of a {name}" for name in class_names]


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """The text encoder's last hidden states, each prompt padded to the tokenizer's full length
    (as the pipeline encodes prompts, the empty one included)."""
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return text_encoder(tokens.input_ids).last_hidden_state


def load_scheduler(path: Path):
    """The pipeline's training noise schedule as a ``DDPMScheduler`` (``add_noise`` and
    ``get_velocity`` for training, whatever class the pipeline samples with). Its config keeps
    every key of the pipeline's (``set_alpha_to_one``, ``steps_offset``, ...), so the sampler
    fedfuse builds from it (``make_scheduler``) is the pipeline's schedule too."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_pretrained(path, subfolder="scheduler")
