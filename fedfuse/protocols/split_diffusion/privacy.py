"""What the split server could learn of a client's images, declared for the harness: what it
received (x_cut) and what it can make of it (the server's model carrying x_cut on to x_0), for
the disclosure figures, and its denoiser, for the membership attack. Evaluation: nothing here
is counted."""

import torch

from fedfuse.api import derive_seed
from fedfuse.protocols.split_diffusion import task


def declare_received(run, server: task.ServerModel, shared: dict) -> None:
    """Declare, per client, what the server received in the last round (x_cut, with its labels
    where conditioned) and what it can make of it: x_cut's rescaled mean (a one-for-one
    reconstruction), its own model carrying x_cut on to x_0 (``approx``) and a fresh sample
    of its model carried on to x_0 (``fresh``). The harness measures the disclosure."""
    for node, (x_cut, cond) in shared.items():
        n = min(len(x_cut), run.cell.evaluation["samples"])
        x_cut, cond = x_cut[:n], None if cond is None else cond[:n]
        recon = task.naive_reconstruction(x_cut, run.config.timesteps, server.cuts[node])
        sets = {"cut": x_cut, "rescaled": recon, **server_views(run, server, node, x_cut, cond)}
        run.server_received(node, sets, reconstruction="rescaled",
                            conditions=0 if shared[node][1] is None else len(shared[node][1]))


def declare_held(run, server: task.ServerModel) -> None:
    """Declare what the server holds, its denoiser over the timesteps it owns, for the harness's
    membership attack. Offered where the server's target is one known function of the noise:
    the exact marginal, one cut (no cut labels), a label or no condition (the server holds
    nothing to attack at c = 0)."""
    cfg, cuts = run.config, set(server.cuts.values())
    if len(cuts) != 1 or cfg.marginal != "exact" or cfg.condition not in ("none", "label"):
        return
    t_c = cuts.pop()
    if t_c < cfg.timesteps:
        run.server_holds(server.model, task.full_schedule(cfg.timesteps), conditional=server.n_cond > 0,
                         t_range=(t_c, cfg.timesteps), step_loss=task.cut_step_loss(cfg.timesteps, t_c))


def server_views(run, server: task.ServerModel, node, x_cut: torch.Tensor, cond) -> dict:
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
