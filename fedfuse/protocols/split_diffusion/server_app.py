"""Server loops: split diffusion (CollaFuse) and its centralized baseline. The local-only
baseline is split diffusion at cut ratio 0."""

import math
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedfuse.api import (
    EVAL_KEY,
    Request,
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
    n_cond = task.condition_values(run.data, cfg.condition)[1]
    model = build_unet(run.data.image_shape, cfg.model, derive_seed(run.cell.seed, 3),
                       classes=task.server_classes(len(labels), n_cond))
    ema, pool, shared = Ema(model, cfg.ema_decay), task.Pool(cfg.server_pool), {}
    for rnd in range(1, run.cell.rounds + 1):
        config = {n: RecordDict({"config": ConfigRecord({"round": rnd})}) for n in run.begin_round(rnd)}
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
        if run.target_due(rnd):
            figures.update(target_figures(grid, run, Server(ema.model, cuts, labels, n_cond), nodes, shared))
        run.round_end(rnd, **figures)
    server = Server(ema.model, cuts, labels, n_cond)
    # at deployment the server denoises to each client's cut and the client finishes (scored by the harness)
    run.deploy(lambda requests: client_samples(grid, run, server, shared, requests, None),
               conditional=cfg.condition == "label")
    return {**cut_figures(cfg, run, cuts), "marginal": cfg.marginal, **last_losses(run), **run.checksum(model),
            **generation_cost(run, cuts, n_cond), **disclosure(run, server, shared), **membership(run, server)}


@dataclass
class Server:
    """The server's trained (EMA) model and how it is labelled: the cut labels and the number
    of condition values."""

    model: object
    cuts: dict
    labels: dict
    n_cond: int

    def label_of(self, node, cond: torch.Tensor | None, n: int):
        """(class labels, null label) of the server's model for ``n`` images of ``node`` with
        conditions ``cond``."""
        cut_label = self.labels.get(self.cuts[node])
        if cond is None and cut_label is None:
            return None, -1
        cut = None if cut_label is None else torch.full((n,), cut_label)
        null = task.joint_label(cut_label, self.n_cond, self.n_cond) if self.n_cond else -1
        return task.joint_label(cut, cond, self.n_cond), null

    def guidance(self, scale: float) -> float:
        """Classifier-free guidance applies to conditions, not to the cut label."""
        return scale if self.n_cond else 1.0


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
    side. A pool smaller than a round's receipts then keeps every client's newest batches;
    added client after client, it kept only the last clients' (protocol version 3: with 5
    clients of 6,400 images a round and a 20,000-image pool, client 0's never reached training)."""
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


def target_figures(grid, run, server: Server, nodes, shared: dict) -> dict:
    """The quality target's FID after a round: ``target_samples`` images made the protocol's
    way, shared among the clients, against held-out images of their classes. Evaluation:
    nothing it moves or computes is counted."""
    with run.uncounted():
        images = client_samples(grid, run, server, shared, target_requests(run, nodes), None)
    return target_of_clients(run, images)


def target_requests(run, nodes) -> dict:
    """{client: Request} of each client's share of the quality target's ``target_samples``
    images, under the conditions it sent."""
    n = math.ceil(run.cell.evaluation["target_samples"] / len(nodes))
    return {run.partition_of(node): Request(n, None, derive_seed(run.cell.seed, 0x7A, run.partition_of(node)))
            for node in nodes}


def target_of_clients(run, images: dict) -> dict:
    """``target_fid`` of every client's {client: images} together, against held-out images of
    the clients' classes."""
    classes = sorted({c for client in images for c in run.client_private(client)[1]})
    return run.target_score(torch.cat([images[c] for c in sorted(images)]), classes)


def client_samples(grid, run, server: Server, shared: dict, requests: dict, flops) -> dict:
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
            content["shared"] = ArrayRecord({"x_cut": Array(x_cut.numpy()),
                                             **({"cond": Array(cond.numpy())} if cond is not None else {})})
        elif cond is not None:  # the client owns the whole timeline: it is only told what to draw
            content["ask"] = ArrayRecord({"cond": Array(cond.numpy())})
        contents[node] = content
    replies = send_each(grid, contents, "query.finish_sampling")
    return {run.partition_of(node): torch.from_numpy(r.content[EVAL_KEY]["x0"].numpy()) for node, r in replies.items()}


def draw_conditions(cond: torch.Tensor | None, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """``n`` conditions drawn from those a client sent: its own mix of classes or attributes."""
    return None if cond is None else cond[torch.randint(len(cond), (n,), generator=generator)]


def generation_cost(run, cuts: dict, n_cond: int) -> dict:
    """What generating one image costs a client at deployment: its own steps of the cut, with
    its own model (guided: two passes a step); the mean over clients."""
    cfg, ev = run.config, run.cell.evaluation
    model = build_unet(run.data.image_shape, cfg.client_model, 0, classes=n_cond + 1 if n_cond else None)
    steps = {run.partition_of(n): task.split_steps(ev["sample_steps"], t_c, cfg.timesteps)[1]
             for n, t_c in cuts.items()}
    return run.client_generation(model, steps, guided=bool(n_cond) and cfg.guidance != 1.0)


def disclosure(run, server: Server, shared: dict) -> dict:
    """What the server received in the last round, against each client's private images; the
    mean over clients. Per shared image: nearest-neighbour MSE/SSIM of x_cut and of its
    rescaled mean (``recon_``). As sets (FID/KID, also against held-out images of the client's
    classes as the reference point): x_cut, rescaled, the server's own model carrying x_cut on
    to x_0 (``approx``), and a fresh sample of the server's model carried on to x_0 (``fresh``)."""
    if not shared:
        return {}
    rows = []
    for node, (x_cut, cond) in shared.items():
        private, classes = run.client_private(run.partition_of(node))
        n = min(len(x_cut), run.cell.evaluation["samples"])
        x_cut, cond = x_cut[:n], None if cond is None else cond[:n]
        recon = task.naive_reconstruction(x_cut, run.config.timesteps, server.cuts[node])
        # KID to the private images comes with the set distances (the same figure, computed once)
        d_shared, d_recon = run.disclosure(x_cut, private, kid=False), run.disclosure(recon, private, kid=False)
        sets = {"cut": x_cut, "rescaled": recon, **server_views(run, server, node, x_cut, cond)}
        distances = run.disclosure_sets(sets, private, classes)
        rows.append({**d_shared, **{f"recon_{k}": v for k, v in d_recon.items()}, **distances,
                     "kid_to_private": distances["disclosure_kid_cut"],
                     "recon_kid_to_private": distances["disclosure_kid_rescaled"],
                     "disclosed_conditions": float(0 if cond is None else len(shared[node][1]))})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if all(math.isfinite(r[k]) for r in rows)}


def membership(run, server: Server) -> dict:
    """The membership attack on what the server holds, its denoiser, over the timesteps it
    owns. Offered where the server's target is one known function of the noise: the exact
    marginal, one cut (no cut labels), a label or no condition; else {} (the server holds
    nothing to attack at c = 0)."""
    cfg, cuts = run.config, set(server.cuts.values())
    if len(cuts) != 1 or cfg.marginal != "exact" or cfg.condition not in ("none", "label"):
        return {}
    t_c = cuts.pop()
    if t_c >= cfg.timesteps:
        return {}
    return run.membership_inference(server.model, task.full_schedule(cfg.timesteps), conditional=server.n_cond > 0,
                                    t_range=(t_c, cfg.timesteps), step_loss=task.cut_step_loss(cfg.timesteps, t_c))


def server_views(run, server: Server, node, x_cut: torch.Tensor, cond) -> dict:
    """The server's own model carried down to x_0 from the received x_cut (``approx``) and from
    its own fresh x_cut (``fresh``). Evaluation: its FLOPs are not the protocol's."""
    cfg, t_c = run.config, server.cuts[node]
    if t_c == 0:  # the server received clean images: nothing to approximate
        return {}
    steps = task.split_steps(run.cell.evaluation["sample_steps"], t_c, cfg.timesteps)
    generator = torch.Generator().manual_seed(derive_seed(run.cell.seed, 0xD1, run.partition_of(node)))
    labels, null = server.label_of(node, cond, len(x_cut))
    scale = server.guidance(cfg.guidance)
    approx = task.client_sample(server.model, cfg.timesteps, t_c, x_cut, steps[1], generator, None, run.resources,
                                labels, null, scale)
    fresh_cut = task.server_sample(server.model, cfg.timesteps, t_c, cfg.marginal, len(x_cut), run.data.image_shape,
                                   steps[0], generator, None, labels, null, scale, run.resources)
    fresh = task.client_sample(server.model, cfg.timesteps, t_c, fresh_cut, steps[1], generator, None,
                               run.resources, labels, null, scale)
    return {"approx": approx, "fresh": fresh}


def centralized(grid, run) -> dict:
    """Baseline: every client uploads all its images (and their conditions) once, counted; the
    server trains one model, by default for as many steps as all clients' local steps together,
    and generates for every client: clients pay nothing to generate."""
    cfg, nodes = run.config, sorted(grid.get_node_ids())
    replies = send_each(grid, {n: RecordDict() for n in nodes}, "query.upload_data")
    uploads = {n: replies[n].content["data"] for n in sorted(replies, key=run.partition_of)}
    conds = {n: torch.from_numpy(u["cond"].numpy()) for n, u in uploads.items() if "cond" in u}
    by_client = {run.partition_of(n): c for n, c in conds.items()}  # what each client uploaded
    pooled = torch.cat([torch.from_numpy(u["images"].numpy()) for u in uploads.values()])
    labels = torch.cat(list(conds.values())) if conds else torch.zeros(len(pooled), dtype=torch.long)
    n_cond = task.condition_values(run.data, cfg.condition)[1]
    model = build_unet(run.data.image_shape, cfg.model, derive_seed(run.cell.seed, 3),
                       classes=n_cond + 1 if n_cond else None)
    ema, steps = Ema(model, cfg.ema_decay), cfg.server_steps or cfg.local_steps * len(nodes)
    for rnd in range(1, run.cell.rounds + 1):
        loss = train(model, task.full_schedule(cfg.timesteps), ClientData(pooled, labels, torch.arange(len(pooled))),
                     steps, cfg.recipe, run.torch_generator(rnd), run.resources, run.flops, conditional=n_cond > 0,
                     start_step=(rnd - 1) * steps, ema=ema, label_dropout=cfg.cond_dropout, null_label=n_cond)
        target = central_target(run, ema.model, nodes, by_client, n_cond) if run.target_due(rnd) else {}
        run.round_end(rnd, train_loss=loss, server_loss=loss, server_steps=float(steps), **target)
    run.deploy(lambda requests: {c: central_samples(run, ema.model, c, r, by_client.get(c), n_cond)
                                 for c, r in requests.items()}, conditional=cfg.condition == "label")
    attack = (run.membership_inference(ema.model, task.full_schedule(cfg.timesteps), conditional=n_cond > 0)
              if cfg.condition in ("none", "label") else {})  # an attribute's values are the server's own labels
    return {"cut_ratio": 1.0, "raw_data_off_device": 1.0, **last_losses(run), **run.checksum(ema.model),
            **run.client_generation(None, {}),
            **attack}


def central_samples(run, model, client: int, request, uploaded, n_cond: int) -> torch.Tensor:
    """The server's samples for ``client``'s ``request``: of its labels, or of conditions
    drawn from those the client uploaded (conditioned on an attribute). Not counted."""
    cfg, ev = run.config, run.cell.evaluation
    generator = torch.Generator().manual_seed(request.seed)
    cond = request.labels if request.labels is not None else draw_conditions(uploaded, request.n, generator)
    return task.server_sample(model, cfg.timesteps, 0, "exact", request.n, run.data.image_shape, ev["sample_steps"],
                              generator, None, cond, n_cond, cfg.guidance, run.resources).clamp(-1, 1)


def central_target(run, model, nodes, conds: dict, n_cond: int) -> dict:
    """The quality target's FID after a round (as ``target_figures``): the server generates for
    every client; evaluation, not counted."""
    requests = target_requests(run, nodes)
    return target_of_clients(run, {c: central_samples(run, model, c, r, conds.get(c), n_cond)
                                   for c, r in requests.items()})


def check_shared(sent, reply, config) -> None:
    """The schema of a split client's replies (``ProtocolSpec.reply_check``): the images it
    noised to the cut are float32 images, ``share_size`` of them when it shares a subset, one
    batch per local step when it shares its batches; each with one condition when the models
    are conditioned; its finished samples are as many as the server asked for."""
    if "shared" in reply:
        x = reply["shared"]["x_cut"]
        n = config.share_size if config.share == "subset" else config.local_steps * config.recipe.batch_size
        if len(x.shape) != 4 or x.shape[0] != n or str(x.dtype) != "float32":
            raise ValueError(f"'shared/x_cut' is {tuple(x.shape)} {x.dtype}; expected {n} float32 images")
        conditioned = config.condition != "none"
        if ("cond" in reply["shared"]) != conditioned:
            raise ValueError(f"'shared/cond' is {'missing' if conditioned else 'sent'}; the models are "
                             f"{'conditioned' if conditioned else 'unconditional'}")
        if conditioned and tuple(reply["shared"]["cond"].shape) != (n,):
            raise ValueError(f"'shared/cond' has shape {tuple(reply['shared']['cond'].shape)}; expected ({n},)")
    if EVAL_KEY in reply and "config" in sent and "n" in sent["config"]:
        x0 = reply[EVAL_KEY]["x0"]
        if len(x0.shape) != 4 or x0.shape[0] != int(sent["config"]["n"]):
            raise ValueError(f"'{EVAL_KEY}/x0' is {tuple(x0.shape)}; the server asked for {int(sent['config']['n'])} images")
