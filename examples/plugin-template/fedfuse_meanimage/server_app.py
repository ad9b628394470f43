import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg

from fedfuse.api import strategy_rounds


def server(grid, run) -> dict:
    n = run.cell.clients
    start = ArrayRecord({"mean": Array(np.zeros(run.data.image_shape, dtype=np.float32))})
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    final = strategy_rounds(grid, run, strategy, start)
    truth = run.data.eval_images.mean(0).numpy()
    error = float(((final["mean"].numpy() - truth) ** 2).mean())
    return {"train_loss": run.rounds[-1]["train_loss"], "mean_image_mse": error}
