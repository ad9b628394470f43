"""Server loop for fedavg: Flower's FedAvg strategy over the full UNet; an EMA of the global
model over rounds is what every client holds at deployment (the harness samples and scores it)."""

from flwr.app import ArrayRecord

from fedfuse.api import derive_seed, fedavg_family, last_trained, strategy_rounds
from fedfuse.protocols.fedavg import task


def server(grid, run) -> dict:
    cfg = run.config
    classes = len(run.data.class_names) if cfg.conditional else None
    model = task.build_model(run.data.image_shape, cfg.model, seed=derive_seed(run.cell.seed, 1), classes=classes)
    scheduler, ema = task.build_scheduler(cfg.timesteps), None

    def evaluate(rnd, arrays):
        nonlocal ema
        model.load_state_dict(arrays.to_torch_state_dict())
        ema = ema or task.Ema(model, cfg.ema_decay, steps_per_update=cfg.local_steps)
        ema.update(model)
        return {"eval_loss": run.held_out_loss(ema.model, scheduler, conditional=cfg.conditional),
                **run.target_check(ema.model, rnd, cfg.timesteps, conditional=cfg.conditional)}

    # every node the grid lists this round: all clients, or the harness's draw (run.begin_round)
    strategy = fedavg_family(cfg.aggregator, cfg.trim, fraction_train=1.0, fraction_evaluate=0.0,
                             min_train_nodes=1, min_available_nodes=1)
    strategy_rounds(grid, run, strategy, ArrayRecord(model.state_dict()), evaluate_fn=evaluate)
    last = last_trained(run.rounds)
    return {"train_loss": last["train_loss"], "eval_loss": last["eval_loss"],
            **run.deploy_model(ema.model, cfg.timesteps, conditional=cfg.conditional)}
