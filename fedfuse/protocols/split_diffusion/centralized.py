"""The centralized baseline: every client uploads its images once (counted), the server trains
one model on them and generates for every client. Raw data leave the device: a bound, not a
private protocol."""

import torch
from flwr.app import ConfigRecord, RecordDict

from fedfuse.api import ClientData, Ema, build_unet, derive_seed, send_each, train
from fedfuse.protocols.split_diffusion import task
from fedfuse.protocols.split_diffusion.server_loop import draw_conditions, finished_on_clients, handover, last_losses


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

    def generate(requests):  # the server generates for every client (from what it uploaded) and sends them
        return delivered(grid, run, {c: central_samples(run, ema.model, c, r, by_client.get(c), n_cond)
                                     for c, r in requests.items()})

    for rnd in range(1, run.cell.rounds + 1):
        loss = train(model, task.full_schedule(cfg.timesteps), ClientData(pooled, labels, torch.arange(len(pooled))),
                     steps, cfg.recipe, run.torch_generator(rnd), run.resources, run.flops, conditional=n_cond > 0,
                     start_step=(rnd - 1) * steps, ema=ema, label_dropout=cfg.cond_dropout, null_label=n_cond)
        target = run.target_deployment(rnd, generate, conditional=cfg.condition == "label")
        run.round_end(rnd, train_loss=loss, server_loss=loss, server_steps=float(steps), **target)
    run.deploy(generate, conditional=cfg.condition == "label")
    if cfg.condition in ("none", "label"):  # an attribute's values are the server's own labels: no attack
        run.server_holds(ema.model, task.full_schedule(cfg.timesteps), conditional=n_cond > 0)
    return {"cut_ratio": 1.0, "raw_data_off_device": 1.0, **last_losses(run), **run.checksum(ema.model),
            **run.client_generation(None, {}), **central_generation(run, ema.model, n_cond)}


def central_generation(run, model, n_cond: int) -> dict:
    """The server runs every sampling step of every image a client asks for (guided: two passes)."""
    steps = task.split_steps(run.cell.evaluation["sample_steps"], 0, run.config.timesteps)[0]  # all of them
    return run.server_generation(model, steps, guided=bool(n_cond) and run.config.guidance != 1.0)


def central_samples(run, model, client: int, request, uploaded, n_cond: int) -> tuple:
    """(images, their conditions or None): the server's samples for ``client``'s ``request``,
    of its labels, or of conditions drawn from those the client uploaded (conditioned on an
    attribute). Not counted."""
    cfg, ev = run.config, run.cell.evaluation
    generator = torch.Generator().manual_seed(request.seed)
    cond = request.labels if request.labels is not None else draw_conditions(uploaded, request.n, generator)
    images = task.server_sample(model, cfg.timesteps, 0, "exact", request.n, run.data.image_shape, ev["sample_steps"],
                                generator, None, cond, n_cond, cfg.guidance, run.resources).clamp(-1, 1)
    return images, cond


def delivered(grid, run, made: dict) -> dict:
    """{client: images}: each client is sent its (images, conditions) in the message split
    diffusion's clients get their x_cut in, with no steps left to run, and hands them on to the
    harness; so what a client receives for each image it asked for is measured."""
    nodes = {run.partition_of(node): node for node in grid.get_node_ids()}
    contents = {nodes[c]: RecordDict({"config": ConfigRecord({"n": len(x), "seed": 0, "client_steps": 0}),
                                      "shared": handover(x, cond)}) for c, (x, cond) in made.items()}
    return finished_on_clients(grid, run, contents)
