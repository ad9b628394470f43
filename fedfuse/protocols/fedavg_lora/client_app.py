"""Flower ClientApp for fedavg-lora / fedavg-full-finetune: fine-tune what the config says
is trainable, on the client's private images, and send only that back."""

import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import EVAL_KEY, ClientData, client_run, derive_seed, train
from fedfuse.api import load_dataset as load
from fedfuse.protocols.fedavg_lora import task

app = ClientApp()
PERSONAL_SALT = 0x9E  # the personalisation steps' batches and noise


@app.query("receive_base")
def receive_base(msg: Message, context) -> Message:
    """The server sends the base once when clients are not assumed to have it."""
    context.state["base"] = msg.content["base"]
    return Message(RecordDict(), reply_to=msg)


@app.train()
def fine_tune(msg: Message, context) -> Message:
    run = client_run(context)
    rnd = int(msg.content["config"]["server-round"])
    loss, trained, n = fit_from(run, context, msg.content["arrays"], run.config.local_steps,
                                run.torch_generator(rnd), (rnd - 1) * run.config.local_steps, run.dp_sgd(rnd))
    reply = RecordDict({"arrays": trained, "metrics": MetricRecord({"train_loss": loss, "num-examples": n})})
    return Message(reply, reply_to=msg)


def fit_from(run, context, arrays: ArrayRecord, steps: int, generator, start_step: int, dp):
    """(mean loss, the trainable part after training, training images): ``steps`` steps on this
    client's images from the trainable part ``arrays``, continuing the warm-up at ``start_step``
    (DP-SGD steps with ``dp``)."""
    cfg = run.config
    model, data = client_model(run, context)
    scheduler, null_label = run.cache["schedule"]
    task.load_trainable_state(model, arrays.to_torch_state_dict(), cfg.mode)
    loss = train(model, scheduler, data, steps, cfg.recipe, generator, run.resources, run.flops, conditional=True,
                 start_step=start_step, label_dropout=cfg.cond_dropout, null_label=null_label, dp=dp)
    return loss, ArrayRecord(task.trainable_state(model, cfg.mode, cfg.aggregation)), len(data)


@app.query("personalize")
def personalize(msg: Message, context) -> Message:
    """The last round's extra: fine-tune the global trainable part on this client's images alone
    and keep the result (its personalised model) for generating."""
    run = client_run(context)
    cfg = run.config
    loss, context.state["personal"], _ = fit_from(run, context, msg.content["arrays"], cfg.personalize_steps,
                                                  run.torch_generator(PERSONAL_SALT), run.cell.rounds * cfg.local_steps,
                                                  run.dp_sgd(PERSONAL_SALT, 0))
    return Message(RecordDict({"metrics": MetricRecord({"personalize_loss": loss})}), reply_to=msg)


@app.query("generate")
def generate(msg: Message, context) -> Message:
    """Deployment: images of the asked labels from this client's personalised model (the global
    one sent along if it has none); they go back only to be scored (EVAL_KEY)."""
    run = client_run(context)
    cfg, ev = run.config, run.cell.evaluation
    model, data = client_model(run, context)
    state = context.state["personal"] if "personal" in context.state else msg.content["arrays"]
    task.load_trainable_state(model, state.to_torch_state_dict(), cfg.mode)
    backbone = task.small_backbone(model, cfg, tuple(data.images.shape[1:]))
    labels = torch.from_numpy(msg.content["ask"]["labels"].numpy())
    images = task.generate(backbone, model, labels, cfg.guidance_scale, ev["sample_steps"], ev["sampler"],
                           seed=int(msg.content["config"]["seed"]), resources=run.resources)
    return Message(RecordDict({EVAL_KEY: ArrayRecord({"x0": Array(images.numpy())})}), reply_to=msg)


def client_model(run, context):
    """(model being fine-tuned, the client's training data in the model's input space). Built
    once per process and cell (the base loads once), with the backbone's (noise scheduler, null
    label) in ``run.cache["schedule"]``: not the backbone itself, whose base weights and VAE
    would stay in memory beside the model's copy."""
    if "model" not in run.cache:
        backbone, data = client_backbone(run, context)
        # the server's adapter initialisation: FFA-LoRA's frozen A must be the same everywhere
        seed = derive_seed(run.cell.seed, task.ADAPTER_SEED_SALT)
        run.cache["model"] = (task.fine_tune_model(backbone.denoiser, run.config, seed), data)
        run.cache["schedule"] = (backbone.scheduler, backbone.null_label)
    return run.cache["model"]


def client_backbone(run, context) -> tuple[task.Backbone, ClientData]:
    """(the base, the client's training data in its input space)."""
    if run.config.model_path:  # Stable Diffusion: train on VAE latents of the client's images
        backbone = task.stable_diffusion_backbone(run.config, load(run.cell.dataset, run.cell.dataset_args))
        images, labels = run.data.images[run.data.indices], run.data.labels[run.data.indices]
        return backbone, ClientData(backbone.encode(images), labels, torch.arange(len(labels)))
    return task.small_backbone(client_base(run, context), run.config, tuple(run.data.images.shape[1:])), run.data


def client_base(run, context):
    if "base" in context.state:
        data = load(run.cell.dataset, run.cell.dataset_args)
        return task.base_from_state(data, run.config, context.state["base"].to_torch_state_dict())
    return task.cached_base(run.cell.dataset, run.cell.dataset_args, run.config)
