"""Flower ClientApp of split diffusion: private denoiser for the low-noise steps, kept in the
node's Flower state (never sent); shares only images noised to the cut (and, when the models
are conditioned, each image's condition)."""

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import EVAL_KEY, Ema, build_unet, client_run, derive_seed, load_dataset, train
from fedfuse.protocols.split_diffusion import task

app = ClientApp()


def conditioned_data(run):
    """(this client's data with its conditions as labels, the number of condition values)."""
    values, n_cond = task.condition_values(load_dataset(run.cell.dataset, run.cell.dataset_args), run.config.condition)
    return task.with_conditions(run.data, values), n_cond


def private_model(run, context, n_cond: int) -> tuple:
    """This client's own denoiser and its EMA: from the node's state after round 1, seeded before.
    Conditioned: one embedding per condition value plus one for "none" (guidance)."""
    model = build_unet(run.data.images.shape[1:], run.config.client_model,
                       derive_seed(run.cell.seed, 2, run.partition_id), classes=n_cond + 1 if n_cond else None)
    if "model" not in context.state:
        return model, Ema(model, run.config.ema_decay)
    model.load_state_dict(context.state["model"].to_torch_state_dict())
    return model, Ema(model, run.config.ema_decay, context.state["ema"].to_torch_state_dict())


def train_own_steps(run, context, data, n_cond: int, t_c: int, rnd: int, generator) -> float:
    """The round's local steps on the client's part of the timeline [0, t_c)."""
    cfg = run.config
    model, ema = private_model(run, context, n_cond)
    loss = train(model, task.full_schedule(cfg.timesteps), data, cfg.local_steps, cfg.recipe, generator,
                 run.resources, run.flops, conditional=n_cond > 0, t_range=(0, t_c),
                 start_step=(rnd - 1) * cfg.local_steps, ema=ema, label_dropout=cfg.cond_dropout, null_label=n_cond,
                 dp=run.dp_sgd(rnd))
    context.state["model"] = ArrayRecord(model.state_dict())
    context.state["ema"] = ArrayRecord(ema.state_dict())
    return loss


def to_share(run, recorded: task.Recorded, generator, dp) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean images (and conditions) this round's share is made of: every batch trained on
    ("batches"; drawn now if the client trains nothing), or a fresh draw ("subset"). With DP
    (``dp``, a DpShare) the draws are Poisson and each is counted as one release."""
    cfg = run.config
    draw = dp.draw if dp is not None else lambda data, *args: data.sample_batch(*args)
    if cfg.share == "subset":
        batch = draw(recorded.data, cfg.share_size, generator)
        if dp is not None:
            dp.count(1, cfg.share_size)
        return batch
    if not recorded.batches:  # c = 1: the client owns no steps but still feeds the server batch by batch
        for _ in range(cfg.local_steps):
            draw(recorded, cfg.recipe.batch_size, generator)
    if dp is not None:
        dp.count(len(recorded.batches), cfg.recipe.batch_size)
    return recorded.drawn()


@app.train("local_and_cut")
def local_and_cut(msg: Message, context) -> Message:
    run = client_run(context)
    cfg, t_c = run.config, task.cut_index(run.config.cut_of(run.partition_id), run.config.timesteps)
    rnd = int(msg.content["config"]["round"])
    generator = run.torch_generator(rnd)
    data, n_cond = conditioned_data(run)
    recorded = task.Recorded(data)
    metrics = {"num-examples": len(run.data)}
    if t_c > 0:  # the client owns the low-noise steps [0, t_c)
        metrics["train_loss"] = train_own_steps(run, context, recorded, n_cond, t_c, rnd, generator)
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if t_c < cfg.timesteps:  # something for the server: images noised to the cut
        dp = run.dp_share()
        x0, cond = to_share(run, recorded, generator, dp)
        if dp is not None:  # each image clipped so that the cut's own noise makes it DP (labels go as they are)
            x0 = dp.clip(x0, *task.cut_scales(cfg.timesteps, t_c))
        shared = {"x_cut": Array(task.noise_to_cut(x0, cfg.timesteps, t_c, generator).numpy())}
        if n_cond:  # the server's model is conditioned too: it learns each image's condition
            shared["cond"] = Array(cond.numpy())
        content["shared"] = ArrayRecord(shared)
    return Message(content, reply_to=msg)


@app.query("finish_sampling")
def finish_sampling(msg: Message, context) -> Message:
    """Denoise the server's x_cut (or pure noise, if the client owns the whole timeline) to x_0,
    under the conditions the server sent or asked for (or, alone, conditions drawn from its own data)."""
    run = client_run(context)
    cfg, t_c = run.config, task.cut_index(run.config.cut_of(run.partition_id), run.config.timesteps)
    conf = msg.content["config"]
    generator = torch.Generator().manual_seed(int(conf["seed"]))
    data, n_cond = conditioned_data(run)
    shared = msg.content["shared"] if "shared" in msg.content else None
    x = (torch.from_numpy(shared["x_cut"].numpy()) if shared is not None
         else torch.randn((int(conf["n"]), *run.data.images.shape[1:]), generator=generator))
    cond = None
    if n_cond:  # the conditions sent with x_cut, or asked for, or (alone) drawn from its own data
        told = shared if shared is not None else msg.content["ask"] if "ask" in msg.content else None
        cond = (torch.from_numpy(told["cond"].numpy()) if told is not None
                else data.sample_batch(int(conf["n"]), generator)[1])
    if t_c > 0:
        x = task.client_sample(private_model(run, context, n_cond)[1].model, cfg.timesteps, t_c, x,
                               int(conf["client_steps"]), generator, run.flops, run.resources, cond, n_cond,
                               cfg.guidance)
    # The samples go back only to be scored by the harness: not protocol traffic (EVAL_KEY).
    reply = {"x0": Array(x.numpy())}
    if cond is not None:
        reply["cond"] = Array(cond.numpy())
    return Message(RecordDict({EVAL_KEY: ArrayRecord(reply)}), reply_to=msg)


@app.query("upload_data")
def upload_data(msg: Message, context) -> Message:
    """The centralized baseline: the client hands over all its images, with their conditions
    when the model is conditioned (counted as they travel)."""
    run = client_run(context)
    data, n_cond = conditioned_data(run)
    images = {"images": Array(np.ascontiguousarray(run.data.images[run.data.indices].numpy()))}
    if n_cond:
        images["cond"] = Array(np.ascontiguousarray(data.labels[data.indices].numpy()))
    return Message(RecordDict({"data": ArrayRecord(images), "meta": ConfigRecord({"n": len(run.data)})}),
                   reply_to=msg)
