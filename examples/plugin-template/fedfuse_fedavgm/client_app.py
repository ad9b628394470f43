"""The ClientApp: receive the global model, train it locally, send it back (thin wiring)."""

import dataclasses

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import client_run
from fedfuse_fedavgm import task

app = ClientApp()
STATE = "fedavgm"  # this client's record in context.state


@app.train()
def train(msg: Message, context) -> Message:
    run = client_run(context)  # the cell, this client's data, config, seeds and FLOP meter
    classes = run.num_classes if run.config.conditional else None  # a class-conditional model embeds each label
    model = task.build_unet(run.data.images.shape[1:], run.config.model, seed=0, classes=classes)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    sent = {k: v.clone() for k, v in model.state_dict().items()}
    # Per-client state lives in context.state: Flower keeps it for this client, across rounds
    # and processes (a global or run.cache would not survive; `fedfuse check protocol` tests it).
    trained = int(context.state[STATE]["rounds_trained"]) if STATE in context.state else 0
    cfg = dataclasses.replace(run.config, lr=run.config.lr * run.config.client_lr_decay ** trained)
    rnd = int(msg.content["config"]["server-round"])
    # dp: the harness's DP service, where the suite entry asks for DP (the plugin says it takes it)
    loss = task.local_train(model, run.data, cfg, run.torch_generator(rnd), run.resources, run.flops, rnd,
                            run.dp_sgd(rnd))
    context.state[STATE] = MetricRecord({"rounds_trained": trained + 1})
    context.state["update_norms"] = ArrayRecord({"norms": task.update_norms(sent, model.state_dict())})
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(run.data), "rounds-trained": trained + 1})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


@app.query("client_stats")  # a custom message type: the server sends "query.client_stats"
def client_stats(msg: Message, context) -> Message:
    """What this client's state says: rounds it trained, and its last update's norm per tensor
    (an extra array in the upload: its bytes count like any other)."""
    trained = int(context.state[STATE]["rounds_trained"]) if STATE in context.state else 0
    norms = context.state["update_norms"] if "update_norms" in context.state else ArrayRecord()
    return Message(RecordDict({"stats": MetricRecord({"rounds-trained": trained}), "update_norms": norms}),
                   reply_to=msg)
