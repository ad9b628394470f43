"""Flower ClientApp of quantized FedAvg: receive the model (or its quantized change), train
locally, send the update quantized to the bits the server planned for this client."""

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import build_scheduler, build_unet, client_run, derive_seed, train
from fedfuse.protocols.ondemand_quant import task

app = ClientApp()


def received_model(run, msg: Message, context):
    """The global model: sent as it is, or as a quantized change to the one this client holds
    (kept in the node's Flower state; before the first round, the same seeded init as the server's)."""
    cfg = run.config
    if "arrays" in msg.content:
        model = build_unet(run.data.images.shape[1:], cfg.model, seed=0, classes=classes_of(run))
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        return model
    model = build_unet(run.data.images.shape[1:], cfg.model, seed=derive_seed(run.cell.seed, 1), classes=classes_of(run))
    if "view" in context.state:
        model.load_state_dict(context.state["view"].to_torch_state_dict())
    change = {k: v.numpy() for k, v in msg.content["down"].items()}
    model.load_state_dict(task.apply_change(model.state_dict(), change, cfg.downlink_bits, cfg.block))
    context.state["view"] = ArrayRecord(model.state_dict())
    return model


def classes_of(run) -> int | None:
    return run.num_classes if run.config.conditional else None


@app.train()
def train_and_quantize(msg: Message, context) -> Message:
    run = client_run(context)
    cfg, conf = run.config, msg.content["config"]
    model = received_model(run, msg, context)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rnd, bits = int(conf["server-round"]), int(conf["bits"])
    loss = train(model, build_scheduler(cfg.timesteps), run.data, cfg.local_steps, cfg.recipe,
                 run.torch_generator(rnd), run.resources, run.flops, conditional=cfg.conditional,
                 start_step=(rnd - 1) * cfg.local_steps, dp=run.dp_sgd(rnd))  # DP noise enters before quantization
    rng = np.random.default_rng(derive_seed(run.cell.seed, run.partition_id, rnd, 0x9))  # stochastic rounding
    update = task.encode_update(before, model.state_dict(), bits, cfg.block, rng)
    reply = RecordDict({"update": ArrayRecord({k: Array(v) for k, v in update.items()}),
                        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(run.data)})})
    return Message(reply, reply_to=msg)
