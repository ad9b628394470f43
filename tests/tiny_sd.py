"""A tiny Stable Diffusion directory with random weights, made offline with save_pretrained:
UNet2DConditionModel, AutoencoderKL, a 2-layer CLIP text encoder, a character-level CLIP
tokenizer (vocab.json of single characters, no merges) and a real pipeline's scheduler config
(``SCHEDULERS``: Stable Diffusion 1.x's, epsilon, or 2.x's, v-prediction)."""

import json
from pathlib import Path

SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "trained_betas": None, "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True,
               "steps_offset": 1}
SCHEDULERS = {  # scheduler/scheduler_config.json as the Stable Diffusion 1.5 and 2.1 repositories ship it
    "epsilon": {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", **SD_SCHEDULE},
    "v_prediction": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", **SD_SCHEDULE,
                     "prediction_type": "v_prediction"},
}


def make_tiny_sd(root: Path, prediction_type: str = "epsilon") -> Path:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).save_pretrained(root / "unet")
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=16,
    ).save_pretrained(root / "vae")
    chars = list(bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (root / "tokenizer").mkdir(parents=True)
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "tokenizer" / "vocab.json"), str(root / "tokenizer" / "merges.txt"),
                              model_max_length=16)
    tokenizer.save_pretrained(root / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                 num_hidden_layers=2, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                                 eos_token_id=vocab["<|endoftext|>"])).save_pretrained(root / "text_encoder")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULERS[prediction_type]))
    return root
