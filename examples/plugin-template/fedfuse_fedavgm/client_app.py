"""The ClientApp: receive the global model, train it locally, send it back (thin wiring)."""

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import client_run
from fedfuse_fedavgm import task

app = ClientApp()


@app.train()
def train(msg: Message, context) -> Message:
    run = client_run(context)  # the cell, this client's data, config, seeds and FLOP meter
    classes = run.num_classes if run.config.conditional else None  # a class-conditional model embeds each label
    model = task.build_unet(run.data.images.shape[1:], run.config.model, seed=0, classes=classes)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    rnd = int(msg.content["config"]["server-round"])
    loss = task.local_train(model, run.data, run.config, run.torch_generator(rnd), run.resources, run.flops, rnd)
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(run.data)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)
