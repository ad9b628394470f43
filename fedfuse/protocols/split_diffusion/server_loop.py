"""Split diffusion's server loop (CollaFuse): clients keep the low-noise steps and their data,
the server trains and runs the high-noise steps on the cut-noised images they send. The
local-only baseline is this loop at cut ratio 0; the centralized baseline is centralized.py."""

import math

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedfuse.api import EVAL_KEY, Ema, build_unet, derive_seed, send_each
from fedfuse.protocols.split_diffusion import task
from fedfuse.protocols.split_diffusion.privacy import declare_held, declare_received


def split_server(grid, run) -> dict:
    """Each round the clients train their low-noise denoisers and send the cut-noised copy of
    their batches; the server trains its high-noise denoiser on what it has received."""
    cfg, nodes = run.config, sorted(grid.get_node_ids())
    cuts = {n: task.cut_index(cfg.cut_of(run.partition_of(n)), cfg.timesteps) for n in nodes}
    labels = cut_labels(cfg.marginal, cuts.values(), cfg.timesteps)
    n_cond = task.condition_values(run.data, cfg.condition)[1]
    model = build_unet(run.data.image_shape, cfg.model, derive_seed(run.cell.seed, 3),
                       classes=task.server_classes(len(labels), n_cond))
    ema, pool, shared = Ema(model, cfg.ema_decay), task.Pool(cfg.server_pool), {}
    trained = task.ServerModel(ema.model, cuts, labels, n_cond)  # the server's EMA model as it trains

    def generate(requests):  # the server denoises to each client's cut and the client finishes
        return client_samples(grid, run, trained, shared, requests, None)

    for rnd in range(1, run.cell.rounds + 1):
        # with DP, a client's share is Poisson-sampled: its size varies (replies.py)
        asked = ConfigRecord({"round": rnd, **({"poisson": True} if run.cell.dp else {})})
        config = {n: RecordDict({"config": asked}) for n in run.begin_round(rnd)}
        if not config:  # nobody online this round
            run.round_end(rnd)
            continue
        replies = send_each(grid, config, "train.local_and_cut")
        # Pool in client order: replies arrive in any order and node ids differ from run to run.
        shared = received(replies, sorted(replies, key=run.partition_of))
        figures = client_losses(replies)
        if shared:  # the server trains its denoiser on what it has received so far
            add_to_pool(pool, shared, cuts, labels, cfg.recipe.batch_size)
            steps = cfg.server_steps or math.ceil(sum(len(x) for x, _ in shared.values()) / cfg.recipe.batch_size)
            figures["server_loss"] = task.train_server(
                model, pool.tensors, cfg.timesteps, cfg.marginal, steps, cfg.recipe, run.torch_generator(rnd),
                run.resources, run.flops, start_step=(rnd - 1) * steps, ema=ema, n_cond=n_cond,
                cond_dropout=cfg.cond_dropout)
            figures["server_steps"] = float(steps)
        figures.update(run.target_deployment(rnd, generate, conditional=cfg.condition == "label"))
        run.round_end(rnd, **figures)
    run.deploy(generate, conditional=cfg.condition == "label")  # the harness scores it
    declare_held(run, trained)  # the harness attacks what the server holds
    declare_received(run, trained, shared)  # and measures what it received discloses
    return {**cut_figures(cfg, run, cuts), "marginal": cfg.marginal, **last_losses(run), **run.checksum(model),
            **generation_cost(run, trained)}


def cut_labels(marginal: str, cuts, timesteps: int) -> dict[int, int]:
    """{t_c: label} when the server's model is conditioned on the cut, else {}."""
    distinct = task.shared_cuts(cuts, timesteps)
    return {t_c: i for i, t_c in enumerate(distinct)} if task.needs_cut_labels(marginal, distinct) else {}


def received(replies, order) -> dict:
    """{node: (x_cut, conditions or None)} of the clients that shared this round."""
    out = {}
    for n in order:
        if "shared" in replies[n].content:
            record = replies[n].content["shared"]
            cond = torch.from_numpy(record["cond"].numpy()) if "cond" in record else None
            out[n] = (torch.from_numpy(record["x_cut"].numpy()), cond)
    return out


def add_to_pool(pool: task.Pool, shared: dict, cuts: dict, labels: dict, batch_size: int) -> None:
    """The round's x_cut of every client, with each image's cut (its label, its condition), in
    the order they would arrive: one batch of each client in turn, as clients train side by
    side. A pool smaller than a round's receipts then keeps every client's newest batches (added
    client after client, it would keep only the last clients')."""
    entries = []
    for n, (x, cond) in shared.items():
        entry = {"x_cut": x, "cut": torch.full((len(x),), cuts[n])}
        if labels:
            entry["cut_label"] = torch.full((len(x),), labels[cuts[n]])
        if cond is not None:
            entry["cond"] = cond
        entries.append(entry)
    order = task.interleaved([len(e["x_cut"]) for e in entries], batch_size)
    pool.add(**{key: torch.cat([e[key] for e in entries])[order] for key in entries[0]})


def cut_figures(cfg, run, cuts: dict) -> dict:
    """The cut ratio (mean over clients when they differ) and t_c when all clients share it."""
    ratios = [cfg.cut_of(run.partition_of(n)) for n in cuts]
    # c = 1: the client's x_cut is its clean images (t_c = 0), raw data off the device
    figures = {"cut_ratio": float(np.mean(ratios)), "raw_data_off_device": float(min(cuts.values()) == 0)}
    if len(set(cuts.values())) == 1:
        figures["t_c"] = next(iter(cuts.values()))
    return figures


def client_losses(replies) -> dict:
    losses = [r.content["metrics"]["train_loss"] for r in replies.values() if "train_loss" in r.content["metrics"]]
    return {"train_loss": float(np.mean(losses))} if losses else {}


def last_losses(run) -> dict:
    last = run.rounds[-1]
    return {k: last[k] for k in ("train_loss", "server_loss") if k in last}


def client_samples(grid, run, server: task.ServerModel, shared: dict, requests: dict, flops) -> dict:
    """{client: its request's images}. Server: noise -> x_cut; each client: x_cut -> x_0 with
    its own model. Conditioned models generate for the request's labels, else for conditions
    drawn from those the client sent (the client draws from its own data when it owns the
    whole timeline)."""
    cfg, ev = run.config, run.cell.evaluation
    nodes = {run.partition_of(node): node for node in server.cuts}
    contents = {}
    for client, request in requests.items():
        node, t_c = nodes[client], server.cuts[nodes[client]]
        server_steps, client_steps = task.split_steps(ev["sample_steps"], t_c, cfg.timesteps)
        content = RecordDict({"config": ConfigRecord({"n": request.n, "seed": request.seed,
                                                      "client_steps": client_steps})})
        generator = torch.Generator().manual_seed(request.seed)
        cond = request.labels if request.labels is not None or node not in shared else \
            draw_conditions(shared[node][1], request.n, generator)
        if server_steps:
            labels, null = server.label_of(node, cond, request.n)
            x_cut = task.server_sample(server.model, cfg.timesteps, t_c, cfg.marginal, request.n,
                                       run.data.image_shape, server_steps, generator, flops, labels, null,
                                       server.guidance(cfg.guidance), run.resources)
            content["shared"] = handover(x_cut, cond)
        elif cond is not None:  # the client owns the whole timeline: it is only told what to draw
            content["ask"] = ArrayRecord({"cond": Array(cond.numpy())})
        contents[node] = content
    return finished_on_clients(grid, run, contents)


def handover(x_cut: torch.Tensor, cond: torch.Tensor | None) -> ArrayRecord:
    """What a client is sent to finish sampling: x_cut, with its conditions if any."""
    return ArrayRecord({"x_cut": Array(x_cut.numpy()), **({"cond": Array(cond.numpy())} if cond is not None else {})})


def finished_on_clients(grid, run, contents: dict) -> dict:
    """{client: x_0}: each node finishes sampling from its ``contents`` (query.finish_sampling)
    and hands the images to the harness (evaluation: not protocol traffic)."""
    replies = send_each(grid, contents, "query.finish_sampling")
    return {run.partition_of(node): torch.from_numpy(r.content[EVAL_KEY]["x0"].numpy()) for node, r in replies.items()}


def draw_conditions(cond: torch.Tensor | None, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """``n`` conditions drawn from those a client sent: its own mix of classes or attributes."""
    return None if cond is None else cond[torch.randint(len(cond), (n,), generator=generator)]


def generation_cost(run, server: task.ServerModel) -> dict:
    """What generating one image costs at deployment: a client its own steps below the cut, with
    its own model, and the server its steps above it (guided: two passes a step); the means over
    clients."""
    cfg, ev = run.config, run.cell.evaluation
    model = build_unet(run.data.image_shape, cfg.client_model, 0, classes=server.n_cond + 1 if server.n_cond else None)
    steps = {run.partition_of(n): task.split_steps(ev["sample_steps"], t_c, cfg.timesteps) for n, t_c in server.cuts.items()}
    return {**run.client_generation(model, {c: s[1] for c, s in steps.items()}, guided=bool(server.n_cond) and cfg.guidance != 1.0),
            **run.server_generation(server.model, {c: s[0] for c, s in steps.items()},
                                    guided=server.guidance(cfg.guidance) != 1.0)}