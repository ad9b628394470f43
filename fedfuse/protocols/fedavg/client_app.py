"""Flower ClientApp for fedavg: receive the global model, train locally, send it back."""

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.api import client_run
from fedfuse.protocols.fedavg import task

app = ClientApp()


@app.train()
def train(msg: Message, context) -> Message:
    run = client_run(context)
    cfg = run.config
    model = task.build_model(run.data.images.shape[1:], cfg.model, seed=0,
                             classes=run.num_classes if cfg.conditional else None)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    rnd = int(msg.content["config"]["server-round"])
    loss = task.train(model, task.build_scheduler(cfg.timesteps), run.data, cfg.local_steps, cfg.recipe,
                      run.torch_generator(rnd), run.resources, run.flops, conditional=cfg.conditional,
                      start_step=(rnd - 1) * cfg.local_steps, dp=run.dp_sgd(rnd))
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(run.data)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)
