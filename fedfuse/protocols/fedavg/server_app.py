"""Server loop for fedavg: Flower's FedAvg strategy over the full UNet."""

from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg

from fedfuse.bench.flower import strategy_rounds
from fedfuse.bench.services import derive_seed
from fedfuse.protocols.fedavg import task

EVAL_SEED_SALT = 0xE7A1


def server(grid, run) -> dict:
    cfg, n = run.config, run.cell.clients
    model = task.build_model(run.data.image_shape, cfg.width, seed=derive_seed(run.cell.seed, 1))
    scheduler = task.build_scheduler(cfg.timesteps)
    held_out, _ = run.eval_subset(cfg.eval_samples)

    def evaluate(rnd, arrays):
        model.load_state_dict(arrays.to_torch_state_dict())
        # Same noise every round (fixed generator): rounds are compared on equal terms.
        return {"eval_loss": task.evaluate(model, scheduler, held_out, cfg.batch_size,
                                           run.torch_generator(EVAL_SEED_SALT))}

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    final = strategy_rounds(grid, run, strategy, ArrayRecord(model.state_dict()), evaluate_fn=evaluate)
    model.load_state_dict(final.to_torch_state_dict())
    last = run.rounds[-1]
    return {"train_loss": last["train_loss"], "eval_loss": last["eval_loss"],
            "model_params": sum(p.numel() for p in model.parameters()), **run.sample_and_score(model, cfg.timesteps)}

