"""Server loop of fedavg-lora / fedavg-full-finetune: pre-train (or load) the base on public
images, measure it, then FedAvg the trainable part over the clients' private images."""

import json

import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedfuse.api import (
    ClientData,
    Ema,
    build_scheduler,
    derive_seed,
    sample,
    send_each,
    strategy_rounds,
)
from fedfuse.protocols.fedavg_lora import task


def server(grid, run) -> dict:
    cfg, data = run.config, run.data
    backbone = server_backbone(run)
    base, card = backbone.denoiser, backbone.card
    classes = sorted(set(data.train_labels[data.private].tolist()))  # what the clients hold
    before = base_score(run, backbone, classes)
    model = task.fine_tune_model(base, cfg, seed=derive_seed(run.cell.seed, 1))  # the adapters clients start from
    if not cfg.base_on_clients:
        send_base(grid, base)
    scheduler, ema = build_scheduler(cfg.timesteps), Ema(model, cfg.ema_decay, steps_per_update=cfg.local_steps)

    def held_out_loss(rnd, arrays):
        task.load_trainable_state(model, arrays.to_torch_state_dict(), cfg.mode)
        ema.update(model)
        return {"eval_loss": run.held_out_loss(ema.model, scheduler, classes, conditional=True, encode=backbone.encode)}

    n = run.cell.clients
    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    start = ArrayRecord(task.trainable_state(model, cfg.mode))
    strategy_rounds(grid, run, strategy, start, evaluate_fn=held_out_loss)
    sent = sum(v.numel() for v in task.trainable_state(model, cfg.mode).values())
    return {"train_loss": run.rounds[-1]["train_loss"], "eval_loss": run.rounds[-1]["eval_loss"],
            "trained_params": sent, "model_params": sum(p.numel() for p in base.parameters()),
            **{k: card[k] for k in ("pretrain_flops", "pretrain_s")}, **before,
            **score(run, backbone, ema.model, classes)}


def server_backbone(run) -> task.Backbone:
    if run.config.model_path:
        return task.stable_diffusion_backbone(run.config, run.data)
    base, card = pretrained_base(run)
    return task.Backbone(base, run.data.image_shape, card=card)


def pretrained_base(run):
    data = run.data
    if len(data.public) == 0:
        raise ValueError("fine-tuning needs public images to pre-train the base: give the dataset "
                         "public_classes = [...] or public_fraction = ...")
    public = ClientData(data.train_images, data.train_labels, torch.from_numpy(data.public))
    return task.pretrained_base(run.cell.dataset, run.cell.dataset_args, data, public, run.config, run.status,
                                run.resources)


def send_base(grid, base) -> None:
    """Clients are not assumed to have the base: it travels once, before round 1 (counted)."""
    arrays = ArrayRecord(base.state_dict())
    send_each(grid, {node: RecordDict({"base": arrays}) for node in grid.get_node_ids()}, "query.receive_base")


_BASE_SCORES: dict = {}  # the base's quality depends only on (base, seed, evaluation): once per process
BASE_SCORES_KEPT = 16


def base_score(run, backbone, classes) -> dict:
    cfg, cell = run.config, run.cell
    key = (cfg.model_path or task.base_key(cell.dataset, cell.dataset_args, cfg), cell.seed,
           json.dumps(cell.evaluation, sort_keys=True), tuple(classes))
    if key not in _BASE_SCORES:
        if len(_BASE_SCORES) >= BASE_SCORES_KEPT:
            _BASE_SCORES.pop(next(iter(_BASE_SCORES)))  # bounded: the oldest goes
        _BASE_SCORES[key] = score(run, backbone, backbone.denoiser, classes, "base_")
    return _BASE_SCORES[key]


def score(run, backbone, model, classes: list[int], prefix: str = "") -> dict:
    """Quality of class-conditional samples of the clients' classes vs held-out images of them."""
    ev = run.cell.evaluation
    labels = torch.tensor(classes).repeat(ev["samples"] // len(classes) + 1)[: ev["samples"]]
    images = backbone.decode(sample(model, ev["samples"], backbone.shape, run.config.timesteps, ev["sample_steps"],
                                    ev["sampler"], seed=derive_seed(run.cell.seed, 0x5A), resources=run.resources,
                                    class_labels=labels))
    grid = f"{prefix or 'final_'}samples.png"
    metrics = {**run.checksum(model), **run.score_samples(images, classes=classes, grid_name=grid)}
    if prefix:  # the base model's reference scores
        return {f"{prefix}{k}": v for k, v in metrics.items()
                if k not in ("feature_space", "featnet_accuracy", "model_sha256")}
    # every client holds the fine-tuned model: generating an image costs it all the steps
    steps = min(ev["sample_steps"], run.config.timesteps)
    return {**metrics, **run.client_generation(model, steps, shape=backbone.shape, conditional=True)}
