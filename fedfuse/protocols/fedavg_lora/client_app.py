"""Flower ClientApp for fedavg-lora / fedavg-full-finetune: fine-tune what the config says
is trainable, on the client's private images, and send only that back."""

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import ClientData, build_scheduler, client_run, train
from fedfuse.api import load_dataset as load
from fedfuse.protocols.fedavg_lora import task

app = ClientApp()


@app.query("receive_base")
def receive_base(msg: Message, context) -> Message:
    """The server sends the base once when clients are not assumed to have it."""
    context.state["base"] = msg.content["base"]
    return Message(RecordDict(), reply_to=msg)


@app.train()
def fine_tune(msg: Message, context) -> Message:
    run = client_run(context)
    cfg = run.config
    model, data = client_model(run, context)
    task.load_trainable_state(model, msg.content["arrays"].to_torch_state_dict(), cfg.mode)
    rnd = int(msg.content["config"]["server-round"])
    loss = train(model, build_scheduler(cfg.timesteps), data, cfg.local_steps, cfg.recipe, run.torch_generator(rnd),
                 run.resources, run.flops, conditional=True, start_step=(rnd - 1) * cfg.local_steps)
    reply = RecordDict({"arrays": ArrayRecord(task.trainable_state(model, cfg.mode)),
                        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(data)})})
    return Message(reply, reply_to=msg)


def client_model(run, context):
    """(model being fine-tuned, the client's training data in the model's input space)."""
    if "model" not in run.cache:  # built once per process and cell: the base loads once
        if run.config.model_path:  # Stable Diffusion: train on VAE latents of the client's images
            backbone = task.stable_diffusion_backbone(run.config, load(run.cell.dataset, run.cell.dataset_args))
            images, labels = run.data.images[run.data.indices], run.data.labels[run.data.indices]
            data = ClientData(backbone.encode(images), labels, torch.arange(len(labels)))
            run.cache["model"] = (task.fine_tune_model(backbone.denoiser, run.config), data)
        else:
            run.cache["model"] = (task.fine_tune_model(client_base(run, context), run.config), run.data)
    return run.cache["model"]


def client_base(run, context):
    if "base" in context.state:
        data = load(run.cell.dataset, run.cell.dataset_args)
        return task.base_from_state(data, run.config, context.state["base"].to_torch_state_dict())
    return task.cached_base(run.cell.dataset, run.cell.dataset_args, run.config)
