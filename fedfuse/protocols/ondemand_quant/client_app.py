"""Flower ClientApp of quantized FedAvg: train locally, send the update quantized to the bits
the server planned for this client."""

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import build_scheduler, build_unet, client_run, derive_seed, train
from fedfuse.protocols.ondemand_quant import task

app = ClientApp()


@app.train()
def train_and_quantize(msg: Message, context) -> Message:
    run = client_run(context)
    cfg, conf = run.config, msg.content["config"]
    model = build_unet(run.data.images.shape[1:], cfg.model, seed=0)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rnd, bits = int(conf["server-round"]), int(conf["bits"])
    loss = train(model, build_scheduler(cfg.timesteps), run.data, cfg.local_steps, cfg.recipe,
                 run.torch_generator(rnd), run.resources, run.flops, start_step=(rnd - 1) * cfg.local_steps)
    rng = np.random.default_rng(derive_seed(run.cell.seed, run.partition_id, rnd, 0x9))  # stochastic rounding
    update = task.encode_update(before, model.state_dict(), bits, cfg.block, rng)
    reply = RecordDict({"update": ArrayRecord({k: Array(v) for k, v in update.items()}),
                        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(run.data)})})
    return Message(reply, reply_to=msg)
