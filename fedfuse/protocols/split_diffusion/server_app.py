"""Server loops: split diffusion (CollaFuse) and its centralized baseline. The local-only
baseline is split diffusion at cut ratio 0."""

import math

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedfuse.api import (
    EVAL_KEY,
    ClientData,
    Ema,
    build_unet,
    derive_seed,
    send_each,
    train,
)
from fedfuse.protocols.split_diffusion import task


def server(grid, run) -> dict:
    cfg, nodes = run.config, sorted(grid.get_node_ids())
    cuts = {n: task.cut_index(cfg.cut_of(run.partition_of(n)), cfg.timesteps) for n in nodes}
    labels = cut_labels(cfg.marginal, cuts.values(), cfg.timesteps)
    model = build_unet(run.data.image_shape, cfg.model, derive_seed(run.cell.seed, 3),
                       classes=len(labels) if labels else None)
    ema, shared = Ema(model, cfg.ema_decay), {}
    for rnd in range(1, run.cell.rounds + 1):
        config = {n: RecordDict({"config": ConfigRecord({"round": rnd})}) for n in nodes}
        replies = send_each(grid, config, "train.local_and_cut")
        # Pool in client order: replies arrive in any order and node ids differ from run to run.
        shared = {n: torch.from_numpy(replies[n].content["shared"]["x_cut"].numpy())
                  for n in sorted(replies, key=run.partition_of) if "shared" in replies[n].content}
        figures = client_losses(replies)
        if shared:  # the server trains its denoiser on the pooled x_cut of the round
            figures["server_loss"] = task.train_server(
                model, pool(shared, cuts, labels), cfg.timesteps, cfg.marginal, cfg.server_steps, cfg.recipe,
                run.torch_generator(rnd), run.resources, run.flops, start_step=(rnd - 1) * cfg.server_steps, ema=ema)
        run.round_end(rnd, **figures)
    quality = split_sampling(grid, run, ema.model, nodes, cuts, labels)
    return {**cut_figures(cfg, run, cuts), "marginal": cfg.marginal, **last_losses(run), **run.checksum(model),
            **quality, **disclosure(run, shared, cuts)}


def cut_labels(marginal: str, cuts, timesteps: int) -> dict[int, int]:
    """{t_c: label} when the server's model is conditioned on the cut, else {}."""
    distinct = task.shared_cuts(cuts, timesteps)
    return {t_c: i for i, t_c in enumerate(distinct)} if task.needs_cut_labels(marginal, distinct) else {}


def pool(shared: dict, cuts: dict, labels: dict) -> dict:
    """The round's x_cut of every client, with each image's cut (and its label)."""
    per_image = [torch.full((len(x),), cuts[n]) for n, x in shared.items()]
    out = {"x_cut": torch.cat(list(shared.values())), "cut": torch.cat(per_image)}
    if labels:
        out["label"] = torch.cat([torch.full((len(x),), labels[cuts[n]]) for n, x in shared.items()])
    return out


def cut_figures(cfg, run, cuts: dict) -> dict:
    """The cut ratio (mean over clients when they differ) and t_c when all clients share it."""
    ratios = [cfg.cut_of(run.partition_of(n)) for n in cuts]
    figures = {"cut_ratio": float(np.mean(ratios))}
    if len(set(cuts.values())) == 1:
        figures["t_c"] = next(iter(cuts.values()))
    return figures


def client_losses(replies) -> dict:
    losses = [r.content["metrics"]["train_loss"] for r in replies.values() if "train_loss" in r.content["metrics"]]
    return {"train_loss": float(np.mean(losses))} if losses else {}


def last_losses(run) -> dict:
    last = [r for r in run.rounds if r.get("phase") != "sampling"][-1]
    return {k: last[k] for k in ("train_loss", "server_loss") if k in last}


def split_sampling(grid, run, model, nodes, cuts: dict, labels: dict) -> dict:
    """Server: noise -> x_cut; each client: x_cut -> x_0 with its own model; each client's
    samples scored against held-out images of its classes; the mean over clients. Counted as a
    last round (``phase: sampling``): its bytes and FLOPs are the protocol's."""
    cfg, ev = run.config, run.cell.evaluation
    contents = {}
    for n in nodes:
        t_c, seed = cuts[n], derive_seed(run.cell.seed, 0x5A, run.partition_of(n))
        server_steps, client_steps = task.split_steps(ev["sample_steps"], t_c, cfg.timesteps)
        content = RecordDict({"config": ConfigRecord({"n": ev["samples"], "seed": seed, "client_steps": client_steps})})
        if server_steps:
            x_cut = task.server_sample(model, cfg.timesteps, t_c, cfg.marginal, ev["samples"], run.data.image_shape,
                                       server_steps, torch.Generator().manual_seed(seed), run.flops, labels.get(t_c),
                                       run.resources)
            content["shared"] = ArrayRecord({"x_cut": Array(x_cut.numpy())})
        contents[n] = content
    replies = send_each(grid, contents, "query.finish_sampling")
    images = {n: torch.from_numpy(r.content[EVAL_KEY]["x0"].numpy()) for n, r in replies.items()}
    run.round_end(run.cell.rounds + 1, phase="sampling")
    return mean_quality(run, {run.partition_of(n): x for n, x in images.items()})


def mean_quality(run, images: dict) -> dict:
    scores = []
    for client, x in sorted(images.items()):
        _, classes = run.client_private(client)
        scores.append(run.score_samples(x, classes=classes, grid_name=f"samples_client{client}.png"))
    numeric = [k for k, v in scores[0].items() if isinstance(v, float)]
    return {**scores[0], **{k: float(np.mean([s[k] for s in scores])) for k in numeric}}


def disclosure(run, shared: dict, cuts: dict) -> dict:
    """What the server received in the last round (x_cut), and its naive reconstruction of
    x_0 from it, against each client's private images; the mean over clients."""
    if not shared:
        return {}
    rows = []
    for node, x_cut in shared.items():
        private, _ = run.client_private(run.partition_of(node))
        recon = task.naive_reconstruction(x_cut, run.config.timesteps, cuts[node])
        d_shared, d_recon = run.disclosure(x_cut, private), run.disclosure(recon, private)
        rows.append({**d_shared, **{f"recon_{k}": v for k, v in d_recon.items()}})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if all(math.isfinite(r[k]) for r in rows)}


def centralized(grid, run) -> dict:
    """Baseline: every client uploads all its images once (counted); the server trains one model."""
    cfg, nodes = run.config, sorted(grid.get_node_ids())
    replies = send_each(grid, {n: RecordDict() for n in nodes}, "query.upload_data")
    pooled = torch.cat([torch.from_numpy(replies[n].content["data"]["images"].numpy())
                        for n in sorted(replies, key=run.partition_of)])
    data = ClientData(pooled, torch.zeros(len(pooled), dtype=torch.long), torch.arange(len(pooled)))
    model = build_unet(run.data.image_shape, cfg.model, derive_seed(run.cell.seed, 3))
    ema = Ema(model, cfg.ema_decay)
    for rnd in range(1, run.cell.rounds + 1):
        loss = train(model, task.full_schedule(cfg.timesteps), data, cfg.server_steps, cfg.recipe,
                     run.torch_generator(rnd), run.resources, run.flops, start_step=(rnd - 1) * cfg.server_steps, ema=ema)
        run.round_end(rnd, train_loss=loss, server_loss=loss)
    model = ema.model
    ev = run.cell.evaluation
    images = {}
    for n in nodes:
        client = run.partition_of(n)
        images[client] = task.server_sample(model, cfg.timesteps, 0, "exact", ev["samples"], run.data.image_shape,
                                            ev["sample_steps"], torch.Generator().manual_seed(
                                                derive_seed(run.cell.seed, 0x5A, client)), run.flops,
                                            resources=run.resources)
    run.round_end(run.cell.rounds + 1, phase="sampling")
    return {"cut_ratio": 1.0, **last_losses(run), **run.checksum(model), **mean_quality(run, images)}


def check_shared(sent, reply, config) -> None:
    """The schema of a split client's replies (``ProtocolSpec.reply_check``): the images it
    noised to the cut are ``share_size`` float32 images; its finished samples are as many as
    the server asked for."""
    if "shared" in reply:
        x = reply["shared"]["x_cut"]
        if len(x.shape) != 4 or x.shape[0] != config.share_size or str(x.dtype) != "float32":
            raise ValueError(f"'shared/x_cut' is {tuple(x.shape)} {x.dtype}; expected {config.share_size} float32 images")
    if EVAL_KEY in reply and "config" in sent and "n" in sent["config"]:
        x0 = reply[EVAL_KEY]["x0"]
        if len(x0.shape) != 4 or x0.shape[0] != int(sent["config"]["n"]):
            raise ValueError(f"'{EVAL_KEY}/x0' is {tuple(x0.shape)}; the server asked for {int(sent['config']['n'])} images")
