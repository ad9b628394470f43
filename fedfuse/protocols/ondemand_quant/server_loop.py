"""Server loop of quantized FedAvg: plan each client's bits (and, on demand, CPU frequency and
transmit power), send the model, decode and average the quantized updates."""

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedfuse.api import (
    Ema,
    FlopMeter,
    build_scheduler,
    build_unet,
    derive_seed,
    diffusion_loss,
    last_trained,
    send_each,
)
from fedfuse.protocols.ondemand_quant import solver, task


def server(grid, run) -> dict:
    cfg, nodes = run.config, sorted(grid.get_node_ids())
    classes = len(run.data.class_names) if cfg.conditional else None
    model = build_unet(run.data.image_shape, cfg.model, seed=derive_seed(run.cell.seed, 1), classes=classes)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    scheduler, ema = build_scheduler(cfg.timesteps), None
    flops = cfg.local_steps * step_flops(model, scheduler, cfg.batch_size, run.data.image_shape)
    weights = {run.partition_of(n): 1.0 for n in nodes}  # FedAvg weights; clients report sizes each round
    downlink = Downlink(cfg, model, run.cell.seed)
    if cfg.downlink_bits != task.FULL_PRECISION and run.cell.per_round < run.cell.clients:
        raise ValueError("a quantized downlink sends the change since the last broadcast, which a client that "
                         "missed a round does not have: use downlink_bits = 32 with participation < all clients")
    for rnd in range(1, run.cell.rounds + 1):
        if cfg.redraw_channel:
            run.hardware.redraw(rnd, run.cell.seed)
        active = run.begin_round(rnd)  # all clients, or the round's participants
        if not active:  # nobody online: the model waits
            run.round_end(rnd)
            continue
        params = sum(v.numel() for v in model.state_dict().values())
        plan = plan_round(run, cfg, weights, flops, params, [run.partition_of(n) for n in active])
        for client, choice in plan.items():  # the maxima, unless the plan chose them; before a deadline is checked
            run.set_operating_point(client, choice.cpu_freq_hz, choice.tx_power_w)
        replies = exchange(grid, run, active, downlink.broadcast(model, rnd), plan, rnd, params)
        # a client dropped from a round (bad_replies = "drop") keeps its last weight for the next plan
        weights.update({run.partition_of(n): float(r.content["metrics"]["num-examples"]) for n, r in replies.items()})
        apply_updates(model, replies, run, plan, shapes, cfg.block, weights, rnd)
        losses = [float(r.content["metrics"]["train_loss"]) for r in replies.values()]
        ema = ema or Ema(model, cfg.ema_decay, steps_per_update=cfg.local_steps)  # samples and evaluates
        ema.update(model)
        eval_loss = run.held_out_loss(ema.model, scheduler, conditional=cfg.conditional)
        run.round_end(rnd, train_loss=float(np.mean(losses)), eval_loss=eval_loss,
                      **run.target_check(ema.model, rnd, cfg.timesteps, conditional=cfg.conditional),
                      plan={str(c): {"bits": o.bits, "cpu_freq_hz": o.cpu_freq_hz, "tx_power_w": o.tx_power_w}
                            for c, o in sorted(plan.items())})
    bits = [b["bits"] for r in run.rounds for b in r["plan"].values()]
    last = last_trained(run.rounds)
    return {"train_loss": last["train_loss"], "eval_loss": last["eval_loss"],
            "mean_bits": float(np.mean(bits)), **run.deploy_model(ema.model, cfg.timesteps, conditional=cfg.conditional)}


def step_flops(model, scheduler, batch_size: int, shape) -> float:
    """The planner's estimate of a training step's FLOPs (the harness measures the real ones)."""
    meter = FlopMeter()
    labels = torch.zeros(batch_size, dtype=torch.long) if model.config.num_class_embeds else None
    with meter.step("train"):
        diffusion_loss(model, scheduler, torch.zeros(batch_size, *shape), torch.Generator(), labels).backward()
    model.zero_grad(set_to_none=True)
    return meter.take()["flops_train"]


def plan_round(run, cfg, weights: dict, flops: float, params: int, active: list[int]) -> dict:
    """{client: solver.Choice} for the round's ``active`` clients (partition ids). Fixed-bit
    baselines run at their device's maximum f and p, or (``dvfs``) at the least-energy f and p
    within the deadline for their fixed bits."""
    hw = run.hardware
    if cfg.mode == "fixed" and not cfg.dvfs:
        return {k: solver.Choice(pick(cfg.bit_list, k, None), hw.devices[hw.clients[k].device].cpu_freq_max_hz,
                                 hw.networks[hw.clients[k].network].tx_power_w, 0.0, 0.0, 0.0) for k in active}
    total = sum(weights[k] for k in active)
    ondemand = cfg.mode == "ondemand"
    clients = [solver.ClientProblem(flops, params, weights[k] / total, hw.devices[c.device], hw.networks[c.network],
                                    c.distance_m, pick(cfg.min_bits, k, 1) if ondemand else pick(cfg.bit_list, k, None),
                                    pick(cfg.energy_budget_j, k, np.inf) if ondemand else np.inf, cfg.block)
               for k, c in ((k, hw.clients[k]) for k in active)]
    if not ondemand:  # the bits are fixed (each client's the least it may send): only f, p and the round length are chosen
        return dict(zip(active, solver.solve(clients, cfg.deadline_s, np.inf, sorted({c.min_bits for c in clients}))))
    return dict(zip(active, solver.solve(clients, cfg.deadline_s, solver.error_bound(clients, cfg.error_bits))))


class Downlink:
    """What the server broadcasts: the model as it is (``downlink_bits`` = 32), or its change
    since the last broadcast quantized to ``downlink_bits`` with the shared codec. The server
    keeps ``view``, the model every client holds (each applies the same bytes), so quantization
    error does not accumulate: each round sends the difference to the true model."""

    def __init__(self, cfg, model, seed: int):
        self.cfg, self.seed = cfg, seed
        self.view = {k: v.clone() for k, v in model.state_dict().items()}  # clients build the same seeded init

    def broadcast(self, model, rnd: int) -> RecordDict:
        if self.cfg.downlink_bits == task.FULL_PRECISION:
            return RecordDict({"arrays": ArrayRecord(model.state_dict())})
        rng = np.random.default_rng(derive_seed(self.seed, rnd, 0xD0))
        change = task.encode_update(self.view, model.state_dict(), self.cfg.downlink_bits, self.cfg.block, rng)
        self.view = task.apply_change(self.view, change, self.cfg.downlink_bits, self.cfg.block)
        return RecordDict({"down": ArrayRecord({k: Array(v) for k, v in change.items()})})


def pick(values: tuple, client: int, default):
    """Per-client demand: one value for all, or one per client."""
    if not values:
        return default
    return values[client] if len(values) > 1 else values[0]


def exchange(grid, run, nodes, broadcast: RecordDict, plan, rnd: int, params: int) -> dict:
    """The round's broadcast to every client, with its planned bits (and the model's size, for
    a client that receives only the quantized change)."""
    return send_each(grid, {n: RecordDict({**broadcast, "config": ConfigRecord(
        {"server-round": rnd, "params": params, "bits": plan[run.partition_of(n)].bits})}) for n in nodes}, "train")


def apply_updates(model, replies, run, plan, shapes, block, weights, rnd: int) -> None:
    """The decoded updates' example-weighted mean added to the model (with client-level DP, the
    harness's DP-FedAvg of them: noise on the aggregate, after the clients' quantization)."""
    updates, w = [], []
    for node in sorted(replies, key=run.partition_of):  # a fixed summation order: reproducible averages
        reply, client = replies[node], run.partition_of(node)
        arrays = {k: v.numpy() for k, v in reply.content["update"].items()}
        updates.append(task.decode_update(arrays, shapes, plan[client].bits, block))
        w.append(weights[client])
    mean = task.weighted_mean(updates, w)
    if run.cell.dp.get("level") == "client":
        mean = run.privacy.private_mean(rnd, list(zip(w, updates)), mean)
    model.load_state_dict({k: v + mean[k].to(v.dtype) for k, v in model.state_dict().items()})


def check_update(sent, reply, config) -> None:
    """The schema of a client's reply to "train" (``ProtocolSpec.reply_check``): the packed update
    and its scales (or the float32 delta) sized for the model and the bits it was asked for."""
    if "config" not in sent or "bits" not in sent["config"]:
        return
    n = (int(sent["config"]["params"]) if "params" in sent["config"]
         else sum(int(np.prod(a.shape)) for a in sent["arrays"].values()))
    expected = task.update_schema(n, int(sent["config"]["bits"]), config.block)
    got = {k: (tuple(a.shape), str(a.dtype)) for k, a in reply["update"].items()}
    if got != expected:
        raise ValueError(f"'update' holds {got}; a {int(sent['config']['bits'])}-bit update of {n} values "
                         f"is {expected}")
