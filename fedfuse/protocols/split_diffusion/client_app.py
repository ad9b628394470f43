"""Flower ClientApp of split diffusion: private denoiser for the low-noise steps, kept in the
node's Flower state (never sent); shares only images noised to the cut."""

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import EVAL_KEY, Ema, build_unet, client_run, derive_seed, train
from fedfuse.protocols.split_diffusion import task

app = ClientApp()


def private_model(run, context) -> tuple:
    """This client's own denoiser and its EMA: from the node's state after round 1, seeded before."""
    model = build_unet(run.data.images.shape[1:], run.config.client_model, derive_seed(run.cell.seed, 2, run.partition_id))
    if "model" not in context.state:
        return model, Ema(model, run.config.ema_decay)
    model.load_state_dict(context.state["model"].to_torch_state_dict())
    return model, Ema(model, run.config.ema_decay, context.state["ema"].to_torch_state_dict())


@app.train("local_and_cut")
def local_and_cut(msg: Message, context) -> Message:
    run = client_run(context)
    cfg, t_c = run.config, task.cut_index(run.config.cut_of(run.partition_id), run.config.timesteps)
    generator = run.torch_generator(int(msg.content["config"]["round"]))
    metrics = {"num-examples": len(run.data)}
    if t_c > 0:  # the client owns the low-noise steps [0, t_c)
        model, ema = private_model(run, context)
        rnd = int(msg.content["config"]["round"])
        metrics["train_loss"] = train(model, task.full_schedule(cfg.timesteps), run.data, cfg.local_steps, cfg.recipe,
                                      generator, run.resources, run.flops, t_range=(0, t_c),
                                      start_step=(rnd - 1) * cfg.local_steps, ema=ema)
        context.state["model"] = ArrayRecord(model.state_dict())
        context.state["ema"] = ArrayRecord(ema.state_dict())
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if t_c < cfg.timesteps:  # something for the server: images noised to the cut
        x0, _ = run.data.sample_batch(cfg.share_size, generator)
        content["shared"] = ArrayRecord({"x_cut": Array(task.noise_to_cut(x0, cfg.timesteps, t_c, generator).numpy())})
    return Message(content, reply_to=msg)


@app.query("finish_sampling")
def finish_sampling(msg: Message, context) -> Message:
    """Denoise the server's x_cut (or pure noise, if the client owns the whole timeline) to x_0."""
    run = client_run(context)
    cfg, t_c = run.config, task.cut_index(run.config.cut_of(run.partition_id), run.config.timesteps)
    conf = msg.content["config"]
    generator = torch.Generator().manual_seed(int(conf["seed"]))
    if "shared" in msg.content:
        x = torch.from_numpy(msg.content["shared"]["x_cut"].numpy())
    else:
        x = torch.randn((int(conf["n"]), *run.data.images.shape[1:]), generator=generator)
    if t_c > 0:
        x = task.client_sample(private_model(run, context)[1].model, cfg.timesteps, t_c, x, int(conf["client_steps"]),
                               generator, run.flops, run.resources)
    # The samples go back only to be scored by the harness: not protocol traffic (EVAL_KEY).
    return Message(RecordDict({EVAL_KEY: ArrayRecord({"x0": Array(x.numpy())})}), reply_to=msg)


@app.query("upload_data")
def upload_data(msg: Message, context) -> Message:
    """The centralized baseline: the client hands over all its images (counted as they travel)."""
    run = client_run(context)
    images = run.data.images[run.data.indices].numpy()
    return Message(RecordDict({"data": ArrayRecord({"images": Array(np.ascontiguousarray(images))}),
                               "meta": ConfigRecord({"n": len(images)})}), reply_to=msg)
