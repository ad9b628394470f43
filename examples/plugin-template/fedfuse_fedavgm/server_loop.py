"""The server loop: Flower's FedAvgM strategy and an EMA of the global model, which every client
holds at deployment: the harness samples and scores it (thin wiring)."""

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy import FedAvgM

from fedfuse.api import derive_seed, send_each, strategy_rounds
from fedfuse_fedavgm import task


def server(grid, run) -> dict:
    cfg = run.config
    classes = len(run.data.class_names) if cfg.conditional else None
    model = task.build_unet(run.data.image_shape, cfg.model, seed=derive_seed(run.cell.seed, 1), classes=classes)
    scheduler, ema = task.build_scheduler(cfg.timesteps), None

    def evaluate(rnd, arrays):  # after each round: update the EMA, report the held-out loss
        nonlocal ema
        model.load_state_dict(arrays.to_torch_state_dict())
        ema = ema or task.Ema(model, cfg.ema_decay, steps_per_update=cfg.local_steps)
        ema.update(model)
        return {"eval_loss": run.held_out_loss(ema.model, scheduler, conditional=cfg.conditional)}

    # every node the grid lists this round: all clients, or the harness's draw of those online
    # (run.begin_round); at least 1, since with a profile's availability fewer may be online
    strategy = FedAvgM(fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1,
                       server_learning_rate=cfg.server_lr, server_momentum=cfg.server_momentum)
    strategy_rounds(grid, run, strategy, ArrayRecord(model.state_dict()), evaluate_fn=evaluate)
    stats = client_stats(grid, run)
    last = run.rounds[-1]
    # every client holds the EMA model: the harness samples it for each client (the classes of
    # its own label mix when conditional) and scores it; what it returns here is the model's
    # digest, a client's cost to generate an image and the membership attack on the model
    return {"train_loss": last["train_loss"], "eval_loss": last["eval_loss"], **stats,
            **run.deploy_model(ema.model, cfg.timesteps, conditional=cfg.conditional)}


def client_stats(grid, run) -> dict:
    """A custom message to every client ("query.client_stats"; each reply checked, its bytes
    counted): the mean rounds a client trained (fewer than the rounds with partial
    participation) and the mean norm of the clients' last updates."""
    replies = send_each(grid, {node: RecordDict() for node in grid.get_node_ids()}, "query.client_stats")
    trained = [r.content["stats"]["rounds-trained"] for r in replies.values()]
    norms = [r.content["update_norms"]["norms"].numpy() for r in replies.values() if "norms" in r.content["update_norms"]]
    return {"rounds_trained": float(np.mean(trained)), "update_norm": float(np.mean([n.mean() for n in norms]))}
