"""Server loop of quantized FedAvg: plan each client's bits (and, on demand, CPU frequency and
transmit power), send the model, decode and average the quantized updates."""

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedfuse.api import (
    Ema,
    FlopMeter,
    build_scheduler,
    build_unet,
    derive_seed,
    diffusion_loss,
    send_each,
)
from fedfuse.protocols.ondemand_quant import solver, task


def server(grid, run) -> dict:
    cfg, nodes = run.config, sorted(grid.get_node_ids())
    model = build_unet(run.data.image_shape, cfg.model, seed=derive_seed(run.cell.seed, 1))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    scheduler, ema = build_scheduler(cfg.timesteps), None
    flops = cfg.local_steps * step_flops(model, scheduler, cfg.batch_size, run.data.image_shape)
    weights = {run.partition_of(n): 1.0 for n in nodes}  # FedAvg weights; clients report sizes each round
    for rnd in range(1, run.cell.rounds + 1):
        if cfg.redraw_channel:
            run.hardware.redraw(rnd, run.cell.seed)
        plan = plan_round(run, cfg, weights, flops, sum(v.numel() for v in model.state_dict().values()))
        replies = exchange(grid, run, nodes, model, plan, rnd)
        # a client dropped from a round (bad_replies = "drop") keeps its last weight for the next plan
        weights.update({run.partition_of(n): float(r.content["metrics"]["num-examples"]) for n, r in replies.items()})
        apply_updates(model, replies, run, plan, shapes, cfg.block, weights)
        for client, choice in plan.items():
            if cfg.mode == "ondemand":
                run.set_operating_point(client, choice.cpu_freq_hz, choice.tx_power_w)
        losses = [float(r.content["metrics"]["train_loss"]) for r in replies.values()]
        ema = ema or Ema(model, cfg.ema_decay, steps_per_update=cfg.local_steps)  # samples and evaluates
        ema.update(model)
        eval_loss = run.held_out_loss(ema.model, scheduler)
        run.round_end(rnd, train_loss=float(np.mean(losses)), eval_loss=eval_loss,
                      plan={str(c): {"bits": o.bits, "cpu_freq_hz": o.cpu_freq_hz, "tx_power_w": o.tx_power_w}
                            for c, o in sorted(plan.items())})
    bits = [b["bits"] for r in run.rounds for b in r["plan"].values()]
    return {"train_loss": run.rounds[-1]["train_loss"], "eval_loss": run.rounds[-1]["eval_loss"],
            "mean_bits": float(np.mean(bits)), **run.sample_and_score(ema.model, cfg.timesteps)}


def step_flops(model, scheduler, batch_size: int, shape) -> float:
    """The planner's estimate of a training step's FLOPs (the harness measures the real ones)."""
    meter = FlopMeter()
    with meter.step("train"):
        diffusion_loss(model, scheduler, torch.zeros(batch_size, *shape), torch.Generator()).backward()
    model.zero_grad(set_to_none=True)
    return meter.take()["flops_train"]


def plan_round(run, cfg, weights: dict, flops: float, params: int) -> dict:
    """{client: solver.Choice}. Fixed-bit baselines run at their device's maximum f and p."""
    hw = run.hardware
    if cfg.mode != "ondemand":
        return {k: solver.Choice(cfg.bits, hw.devices[c.device].cpu_freq_max_hz, hw.networks[c.network].tx_power_w,
                                 0.0, 0.0, 0.0) for k, c in enumerate(hw.clients)}
    total = sum(weights.values())
    clients = [solver.ClientProblem(flops, params, weights[k] / total, hw.devices[c.device], hw.networks[c.network],
                                    c.distance_m, pick(cfg.min_bits, k, 1), pick(cfg.energy_budget_j, k, np.inf),
                                    cfg.block) for k, c in enumerate(hw.clients)]
    bound = sum(c.weight**2 * solver.error(cfg.error_bits) for c in clients)
    return dict(enumerate(solver.solve(clients, cfg.deadline_s, bound)))


def pick(values: tuple, client: int, default):
    """Per-client demand: one value for all, or one per client."""
    if not values:
        return default
    return values[client] if len(values) > 1 else values[0]


def exchange(grid, run, nodes, model, plan, rnd: int) -> dict:
    arrays = ArrayRecord(model.state_dict())
    return send_each(grid, {n: RecordDict({"arrays": arrays, "config": ConfigRecord(
        {"server-round": rnd, "bits": plan[run.partition_of(n)].bits})}) for n in nodes}, "train")


def apply_updates(model, replies, run, plan, shapes, block, weights) -> None:
    updates, w = [], []
    for node in sorted(replies, key=run.partition_of):  # a fixed summation order: reproducible averages
        reply, client = replies[node], run.partition_of(node)
        arrays = {k: v.numpy() for k, v in reply.content["update"].items()}
        updates.append(task.decode_update(arrays, shapes, plan[client].bits, block))
        w.append(weights[client])
    mean = task.weighted_mean(updates, w)
    model.load_state_dict({k: v + mean[k].to(v.dtype) for k, v in model.state_dict().items()})


def check_update(sent, reply, config) -> None:
    """The schema of a client's reply to "train" (``ProtocolSpec.reply_check``): the packed update
    and its scales (or the float32 delta) sized for the model and the bits it was asked for."""
    if "arrays" not in sent or "config" not in sent:
        return
    n = sum(int(np.prod(a.shape)) for a in sent["arrays"].values())
    expected = task.update_schema(n, int(sent["config"]["bits"]), config.block)
    got = {k: (tuple(a.shape), str(a.dtype)) for k, a in reply["update"].items()}
    if got != expected:
        raise ValueError(f"'update' holds {got}; a {int(sent['config']['bits'])}-bit update of {n} values "
                         f"is {expected}")
