"""The scaling benchmark's reference: the same federated work as a fedfuse fedavg cell, written
as a plain Flower simulation with no fedfuse machinery (no cell, no counting grid, no reply
checks, no cost model, no FLOP counter, no held-out loss, no EMA).

Each round Flower's own FedAvg samples ``participants`` of the ``registered`` virtual
SuperNodes; each trains the tiny UNet for ``local_steps`` DDPM steps of batch ``batch_size`` on
its IID share of the images and sends its weights back. Prints one JSON object: the wall time
of every round (the time between the ends of consecutive rounds; round 1 from the start).

    .venv/bin/python benchmarks/plain_flower.py --registered 1000 --participants 100 --rounds 3

Ray's actors import this module by name (its folder is put on their PYTHONPATH), so they keep
its data cache from message to message as they keep fedfuse's; the settings travel in the
environment, which Ray's workers inherit.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

ENV = "PLAIN_FLOWER_SETTINGS"


@functools.lru_cache(maxsize=1)
def settings() -> dict:
    return json.loads(os.environ[ENV])


def build_model() -> UNet2DModel:
    torch.manual_seed(0)  # the tiny preset's layout, written out
    return UNet2DModel(sample_size=settings()["side"], in_channels=1, out_channels=1, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)


@functools.lru_cache(maxsize=1)
def images() -> torch.Tensor:
    """The training images, read by fedfuse's loaders (once per process, as fedfuse's clients do):
    the data is the same; everything done with it per round is written out here."""
    from fedfuse.datasets import builtin

    if settings()["dataset"] == "digits":
        return builtin.load_digits().train_images
    return builtin.load_mnist(settings()["side"]).train_images


def share(partition: int, partitions: int) -> torch.Tensor:
    order = np.random.default_rng(0).permutation(len(images()))
    return images()[np.array_split(order, partitions)[partition]]


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    data = share(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))
    model = build_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    optimizer, scheduler = torch.optim.AdamW(model.parameters(), lr=2e-3), DDPMScheduler(num_train_timesteps=200)
    for _ in range(settings()["local_steps"]):
        batch = data[torch.randint(len(data), (settings()["batch_size"],))]
        t, noise = torch.randint(200, (len(batch),)), torch.randn(batch.shape)
        loss = F.mse_loss(model(scheduler.add_noise(batch, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(data)})})
    return Message(content, reply_to=msg)


server = ServerApp()
ENDS: list[float] = []


@server.main()
def main(grid: Grid, context: Context) -> None:
    start = time.perf_counter()
    strategy = FedAvg(fraction_train=settings()["participants"] / settings()["registered"], fraction_evaluate=0.0,
                      min_train_nodes=settings()["participants"],
                      min_available_nodes=settings()["registered"])
    strategy.start(grid, ArrayRecord(build_model().state_dict()), num_rounds=settings()["rounds"],
                   evaluate_fn=lambda rnd, arrays: ENDS.append(time.perf_counter() - start))


def run(**kwargs) -> dict:
    os.environ[ENV] = json.dumps(kwargs)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    cpus = os.cpu_count() or 1
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "num_gpus": 0, "logging_level": "error", "log_to_driver": False}}
    started = time.perf_counter()
    run_simulation(server, client, num_supernodes=kwargs["registered"], backend_config=backend)
    ends = ENDS[1:]  # evaluate_fn runs once before round 1 (round 0) too
    return {"wall_s": time.perf_counter() - started, "round_ends_s": ends,
            "round_s": [b - a for a, b in zip([0.0, *ends], ends)]}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--registered", type=int, required=True)
    p.add_argument("--participants", type=int, required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--local-steps", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dataset", default="mnist", choices=["mnist", "digits"])
    p.add_argument("--side", type=int, default=14)
    p.add_argument("--json", help="also write the result to this file")
    a = p.parse_args()
    result = json.dumps(run(registered=a.registered, participants=a.participants, rounds=a.rounds,
                         local_steps=a.local_steps, batch_size=a.batch_size, dataset=a.dataset, side=a.side))
    print(result)
    if a.json:
        Path(a.json).write_text(result)


if __name__ == "__main__":  # run the importable copy: pickled functions then name it, not __main__
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))  # for Ray's workers
    sys.path.insert(0, here)
    import plain_flower

    plain_flower.cli()
