"""fedavg-lora's Stable Diffusion path trains and samples with the pipeline's own noise schedule
(Stable Diffusion 1.x's epsilon, 2.x's v-prediction), and guides its samples against the
encoded empty prompt; fedfuse's small base samples exactly as before."""

import json
from types import SimpleNamespace

import diffusers
import pytest
import torch
from flwr.app import ArrayRecord
from helpers import client_round, write_suite
from tiny_sd import make_tiny_sd
from torch import nn

from fedfuse.api import build_scheduler, conditioned, diffusion_loss, load_dataset, sample
from fedfuse.toolkit.sampling import make_scheduler
from fedfuse.bench.suites.expand import expand
from fedfuse.bench.suites.parse import load_suite
from fedfuse.plugins.manager import registry
from fedfuse.protocols.fedavg_lora import client_app, server_loop, task

CLASSES = ("zero", "one", "two")
STEPS = 1000  # Stable Diffusion's training length, not fedfuse's 200
SCALED_LINEAR = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, STEPS) ** 2


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def prediction(request) -> str:
    """The pipeline's prediction type: Stable Diffusion 1.x's or 2.x's."""
    return request.param


@pytest.fixture(scope="module")
def pipeline(prediction, tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp(prediction), prediction)


@pytest.fixture(scope="module")
def backbone(pipeline):
    return task.stable_diffusion_backbone(sd_config(pipeline), SimpleNamespace(class_names=CLASSES, image_shape=(1, 8, 8)))


def sd_config(pipeline, **overrides):
    return registry().get("protocols", "fedavg-lora").config(**{"model_path": str(pipeline), **overrides})


def pipelines_scheduler(pipeline, cls=None):
    """The scheduler the pipeline itself loads (the class its config names), or ``cls`` built from its config."""
    config = json.loads((pipeline / "scheduler" / "scheduler_config.json").read_text())
    return (cls or getattr(diffusers, config["_class_name"])).from_pretrained(pipeline, subfolder="scheduler")


@torch.no_grad()
def encoded(pipeline, prompts: list[str]) -> torch.Tensor:
    """The prompts as the pipeline encodes them (padded to the tokenizer's length)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(pipeline, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(pipeline, subfolder="text_encoder")
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    return text(tokens.input_ids).last_hidden_state


# --- (a) training: the pipeline's noise schedule and target -----------------------------------

def test_the_backbone_carries_the_pipelines_noise_schedule(pipeline, prediction, backbone):
    own = pipelines_scheduler(pipeline)
    assert own.config.prediction_type == prediction
    assert backbone.scheduler.config.num_train_timesteps == backbone.train_timesteps == STEPS
    assert torch.allclose(backbone.scheduler.betas, SCALED_LINEAR)
    assert torch.equal(backbone.scheduler.alphas_cumprod, own.alphas_cumprod)
    assert backbone.scheduler.config.prediction_type == own.config.prediction_type


class Zero(nn.Module):
    """A denoiser that outputs zeros: its MSE loss is the mean square of the training target."""

    def forward(self, x, t, class_labels=None):
        return SimpleNamespace(sample=torch.zeros_like(x))


def expected_target(pipeline, prediction, images, noise, t) -> torch.Tensor:
    if prediction == "v_prediction":
        return pipelines_scheduler(pipeline).get_velocity(images, noise, t)  # sqrt(abar) noise - sqrt(1 - abar) x0
    return noise


def test_the_loss_target_is_the_pipelines_prediction_type(pipeline, prediction, backbone):
    images = torch.randn((6, *backbone.shape), generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(6, dtype=torch.long)
    loss = diffusion_loss(Zero(), backbone.scheduler, images, torch.Generator().manual_seed(2), labels)
    replay = torch.Generator().manual_seed(2)  # diffusion_loss's draws: timesteps, then noise
    t = torch.randint(0, STEPS, (6,), generator=replay)
    noise = torch.randn(images.shape, generator=replay)
    target = expected_target(pipeline, prediction, images, noise, t)
    assert loss.item() == pytest.approx(target.pow(2).mean().item(), rel=1e-6)
    if prediction == "v_prediction":
        assert loss.item() != pytest.approx(noise.pow(2).mean().item(), rel=1e-2)


def test_clients_train_with_the_pipelines_schedule_and_prompt_dropout(pipeline, prediction, tmp_path, monkeypatch):
    config = f'{{ model_path = "{pipeline}", local_steps = 1, batch_size = 4, cond_dropout = 0.25 }}'
    suite = write_suite(tmp_path / "s.toml", f'[[protocols]]\nname = "fedavg-lora"\nconfig = {config}\n')
    (cell,) = expand(load_suite(str(suite)), registry())
    cfg, data = sd_config(pipeline, **cell.config), load_dataset(cell.dataset, cell.dataset_args)
    start = task.fine_tune_model(task.stable_diffusion_backbone(cfg, data).denoiser, cfg)
    calls, real_train = [], client_app.train

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(client_app, "train", spy)
    client_round(cell, ArrayRecord(task.trainable_state(start, "lora")))
    ((args, kwargs),) = calls
    scheduler = args[1]
    assert torch.equal(scheduler.alphas_cumprod, pipelines_scheduler(pipeline).alphas_cumprod)
    assert scheduler.config.prediction_type == prediction
    assert kwargs["label_dropout"] == 0.25 and kwargs["null_label"] == len(data.class_names)


# --- (b) sampling: the pipeline's schedule, read by its prediction type -----------------------

@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_the_sampler_has_the_pipelines_schedule(pipeline, prediction, backbone, kind):
    sampler = make_scheduler(kind, backbone.scheduler, 10)
    reference = pipelines_scheduler(pipeline, type(sampler))  # how diffusers swaps a pipeline's scheduler
    reference.set_timesteps(10)
    assert sampler.timesteps.tolist() == list(range(901, 0, -100))  # "leading" spacing, steps_offset 1
    assert torch.equal(sampler.timesteps, reference.timesteps)
    assert torch.equal(sampler.alphas_cumprod, reference.alphas_cumprod)
    assert torch.allclose(sampler.betas, SCALED_LINEAR)
    assert sampler.config.prediction_type == prediction
    assert sampler.config.clip_sample is False  # latents are not clipped to [-1, 1]
    if kind == "ddim":
        assert sampler.final_alpha_cumprod == sampler.alphas_cumprod[0]  # set_alpha_to_one = false


# --- (c) classifier-free guidance against the encoded empty prompt -----------------------------

def test_the_null_label_is_the_encoded_empty_prompt(pipeline, backbone):
    assert backbone.null_label == len(CLASSES)
    prompts = [f"a photo of a {name}" for name in CLASSES] + [""]
    assert backbone.denoiser.prompt_embeds.shape[0] == len(CLASSES) + 1
    assert torch.allclose(backbone.denoiser.prompt_embeds, encoded(pipeline, prompts), atol=1e-5)


@torch.no_grad()
def test_the_guided_denoiser_is_uncond_plus_scale_times_the_difference(pipeline, backbone):
    x, t, labels, scale = torch.randn((2, *backbone.shape)), torch.tensor(500), torch.tensor([0, 2]), 4.0
    unet, embeds = backbone.denoiser.unet, encoded(pipeline, ["a photo of a zero", "a photo of a two", ""])
    cond = unet(x, t, encoder_hidden_states=embeds[:2]).sample
    uncond = unet(x, t, encoder_hidden_states=embeds[[2, 2]]).sample
    denoiser, kwargs = conditioned(backbone.denoiser, labels, backbone.null_label, scale)
    assert torch.allclose(denoiser(x, t, **kwargs).sample, uncond + scale * (cond - uncond), atol=1e-5)


@torch.no_grad()
def guided_ddim_by_hand(pipeline, backbone, labels: list[int], scale: float, steps: int, seed: int) -> torch.Tensor:
    """The pipeline's DDIM by hand: its scheduler config, eps_null + scale * (eps_cond - eps_null)."""
    sampler = pipelines_scheduler(pipeline, diffusers.DDIMScheduler)
    sampler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((len(labels), *backbone.shape), generator=generator)
    prompts = encoded(pipeline, [f"a photo of a {CLASSES[y]}" for y in labels] + [""] * len(labels))
    for t in sampler.timesteps:
        cond, uncond = backbone.denoiser.unet(torch.cat([x, x]), t, encoder_hidden_states=prompts).sample.chunk(2)
        x = sampler.step(uncond + scale * (cond - uncond), t, x, generator=generator).prev_sample
    return x


def test_the_deployed_samples_are_guided_by_the_pipelines_sampler(pipeline, backbone):
    """What the harness asks the deployed fine-tuned model for (a Request of labels and a seed)
    is sampled by the pipeline's own guided DDIM."""
    from fedfuse.api import Request

    captured = {}
    run = SimpleNamespace(
        config=sd_config(pipeline, guidance_scale=4.0), resources=None, checksum=lambda model: {},
        cell=SimpleNamespace(seed=3, evaluation={"samples": 3, "sample_steps": 2, "sampler": "ddim"}),
        deploy=lambda generate, conditional: captured.update(generate=generate, conditional=conditional),
        client_generation=lambda model, steps, **kw: captured.update(steps=steps, **kw) or {},
        server_holds=lambda model, scheduler, **kw: captured.update(attacked=scheduler))
    server_loop.deploy(run, backbone, backbone.denoiser)
    images = captured["generate"]({4: Request(3, torch.tensor([0, 2, 0]), seed=17)})
    latents = guided_ddim_by_hand(pipeline, backbone, [0, 2, 0], 4.0, 2, 17)
    assert list(images) == [4] and torch.allclose(images[4], backbone.decode(latents), atol=1e-4)
    assert captured["conditional"] is True  # it generates the classes it is asked for
    assert captured["guided"] is True and captured["steps"] == 2  # a client's generation: two passes a step
    assert captured["attacked"] is backbone.scheduler  # the membership attack uses the pipeline's schedule


# --- fedfuse's own small base: unchanged ------------------------------------------------------

@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_the_small_base_samples_exactly_as_before(kind):
    cfg = registry().get("protocols", "fedavg-lora").config(model="tiny")
    model = task.build_base((1, 8, 8), 3, "tiny", 0)
    backbone = task.small_backbone(model, cfg, (1, 8, 8))
    labels = torch.tensor([0, 1, 2, 1])
    before = sample(model, 4, (1, 8, 8), cfg.timesteps, 3, kind, seed=5, class_labels=labels)  # the call it replaced
    assert torch.equal(task.generate(backbone, model, labels, 1.0, 3, kind, seed=5), before)
    assert dict(backbone.scheduler.config) == dict(build_scheduler(cfg.timesteps).config)
    assert backbone.null_label is None


@pytest.mark.parametrize("option", [{"guidance_scale": 7.5}, {"cond_dropout": 0.1}])
def test_guidance_needs_a_stable_diffusion_base(option):
    with pytest.raises(ValueError, match="only a Stable Diffusion base"):
        registry().get("protocols", "fedavg-lora").config(**option)
