"""Does the harness add anything over the training it runs?

The same client work — 25 noise-prediction steps of fedavg's tiny UNet on digits, batch 32 —
timed twice: through fedfuse's ClientApp (cell lookup, partition view, Flower Message in
and out, ArrayRecord conversions) and as a plain torch loop written without fedfuse.
"""

from dataclasses import asdict

import torch
import torch.nn.functional as F
from benchutil import FULL, record
from diffusers import DDPMScheduler
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfuse.bench.engine.flower import CellClientApp
from fedfuse.bench.engine.services import RUN_CONFIG_KEY
from fedfuse.bench.suites.cells import CellSpec
from fedfuse.datasets.builtin import load_digits
from fedfuse.protocols.fedavg import task
from fedfuse.protocols.fedavg.plugin import FedAvgConfig

# No warm-up, no EMA: the plain loop below does neither (the server keeps fedavg's EMA anyway).
CFG = asdict(FedAvgConfig(model="tiny", local_steps=25 if FULL else 2, batch_size=32, warmup_steps=0, ema_decay=0.0))
CELL = CellSpec("bench", "1", "fedavg", "fedavg", "2", CFG, "digits", {}, "iid", clients=2, rounds=1)
ROUNDS = 5 if FULL else 1


def _global_model():
    return task.build_model((1, 8, 8), CFG["model"], seed=0)


def test_harness_client_train(benchmark):
    TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = 1  # as run_simulation sets them
    app = CellClientApp({RUN_CONFIG_KEY: CELL.to_json()})
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": CELL.clients},
                      state=RecordDict(), run_config={})
    arrays = ArrayRecord(_global_model().state_dict())

    def one_round():
        content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
        return app(Message(content, dst_node_id=1, message_type="train"), context)

    one_round()  # warm-up: the first call decodes the dataset and builds the partition
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    record(benchmark, "harness_client_train")


def test_plain_torch_train(benchmark):
    data = load_digits()
    images = data.train_images[: len(data.train_images) // 2]
    scheduler = DDPMScheduler(num_train_timesteps=CFG["timesteps"])
    state = _global_model().state_dict()

    def one_round():
        model = task.build_model((1, 8, 8), CFG["model"], seed=0)
        model.load_state_dict(state)
        optimizer = torch.optim.AdamW(model.parameters(), lr=CFG["lr"])
        gen = torch.Generator().manual_seed(0)
        for _ in range(CFG["local_steps"]):
            batch = images[torch.randint(len(images), (CFG["batch_size"],), generator=gen)]
            t = torch.randint(CFG["timesteps"], (len(batch),), generator=gen)
            noise = torch.randn(batch.shape, generator=gen)
            loss = F.mse_loss(model(scheduler.add_noise(batch, noise, t), t).sample, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    one_round()
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    record(benchmark, "plain_torch_train")


def test_reply_checks(benchmark):
    """What the counting grid's reply checks (finite values, keys/shapes/dtypes against the
    model sent, num-examples, size) cost for one client's reply of this model."""
    from flwr.app import MetricRecord

    from fedfuse.bench.engine.validation import ReplyPolicy

    model = _global_model()
    sent = RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord({"server-round": 1})})
    reply = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": 100})})
    policy = ReplyPolicy(sizes={0: 749})
    benchmark.pedantic(lambda: policy.check(reply, sent, "client 0", 0), rounds=ROUNDS * 4, iterations=1)
    record(benchmark, "reply_checks")
