import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import client_run
from fedfuse_meanimage import task

app = ClientApp()


@app.train()
def train(msg: Message, context) -> Message:
    run = client_run(context)
    mean = torch.from_numpy(msg.content["arrays"]["mean"].numpy())
    rnd = int(msg.content["config"]["server-round"])
    mean, loss = task.train(mean, run.data, run.config.local_steps, run.config.batch_size,
                            run.config.lr, run.torch_generator(rnd))
    reply = RecordDict({"arrays": ArrayRecord({"mean": Array(mean.numpy())}),
                        "metrics": MetricRecord({"train_loss": loss, "num-examples": len(run.data)})})
    return Message(reply, reply_to=msg)
