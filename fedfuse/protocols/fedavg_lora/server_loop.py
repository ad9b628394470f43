"""Server loop of fedavg-lora / fedavg-full-finetune: pre-train (or load) the base on public
images, measure it, then FedAvg the trainable part over the clients' private images."""

import json

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedfuse.api import (
    EVAL_KEY,
    ClientData,
    Ema,
    derive_seed,
    last_trained,
    send_each,
    strategy_rounds,
)
from fedfuse.protocols.fedavg_lora import aggregation, task


def server(grid, run) -> dict:
    cfg, data = run.config, run.data
    backbone = server_backbone(run)
    base, card = backbone.denoiser, backbone.card
    classes = sorted(set(data.train_labels[data.private].tolist()))  # what the clients hold
    before = base_score(run, backbone)
    # the adapters clients start from (with FFA-LoRA, the A factors every party keeps)
    model = task.fine_tune_model(base, cfg, seed=derive_seed(run.cell.seed, task.ADAPTER_SEED_SALT))
    if not cfg.base_on_clients:
        send_base(grid, base)
    ema = Ema(model, cfg.ema_decay, steps_per_update=cfg.local_steps)

    def evaluate(rnd, arrays):
        task.load_trainable_state(model, arrays.to_torch_state_dict(), cfg.mode)
        ema.update(model)
        if cfg.personalize_steps and rnd == run.cell.rounds:  # part of the last round: counted as it
            personalize(grid, task.trainable_state(ema.model, cfg.mode, cfg.aggregation))
        loss = run.held_out_loss(ema.model, backbone.scheduler, classes, conditional=True, encode=backbone.encode)
        return {"eval_loss": loss, **run.target_deployment(rnd, generator(run, backbone, ema.model), conditional=True)}

    start = task.trainable_state(model, cfg.mode, cfg.aggregation)
    strategy_rounds(grid, run, strategy(run, model), ArrayRecord(start), evaluate_fn=evaluate)
    last = last_trained(run.rounds)
    trained, params = sum(v.numel() for v in start.values()), sum(p.numel() for p in base.parameters())
    return {"train_loss": last["train_loss"], "eval_loss": last["eval_loss"],
            "trained_params": trained, "model_params": params, "trained_share": trained / params,
            **{k: card[k] for k in ("pretrain_flops", "pretrain_s")}, "pretrain_examples": pretrain_examples(card, cfg),
            **before,
            **deploy(run, backbone, ema.model, grid if cfg.personalize_steps else None)}


def pretrain_examples(card: dict, cfg) -> int:
    """Training images the base's pre-training processed (a track's budget counts them); a base
    cached before they were recorded processed its steps x the batch size."""
    return int(card.get("pretrain_examples", card.get("pretrain_steps", 0) * cfg.batch_size))


def strategy(run, model) -> FedAvg:
    n = 1  # FedAvg trains every node the grid lists: all clients, or the harness's draw (run.begin_round)
    if run.config.mode == "full":
        return FedAvg(fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    frozen = {k: v for k, v in task.trainable_state(model, "lora").items() if k.endswith(aggregation.A_SUFFIX)}
    return LoraFedAvg(run.config.aggregation, run.config.rank, frozen, fraction_evaluate=0.0, min_train_nodes=n,
                      min_available_nodes=n)


class LoraFedAvg(FedAvg):
    """FedAvg of what the clients send (weighted by their examples), then the config's way of
    combining the LoRA factors (aggregation.py), and each round's ``aggregation_error``.
    ``frozen``: the shared A factors, which FFA-LoRA clients do not send."""

    def __init__(self, method: str, rank: int, frozen: dict, **kwargs):
        super().__init__(**kwargs)
        self.method, self.rank, self.frozen = method, rank, frozen

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        states = [self.full(r.content["arrays"].to_torch_state_dict()) for r in replies]
        exact = aggregation.mean_products(states, [float(r.content["metrics"]["num-examples"]) for r in replies])
        applied = self.full(arrays.to_torch_state_dict())
        if self.method == "svd":
            applied = aggregation.with_refactored(applied, exact, self.rank)
            arrays = ArrayRecord(applied)
        metrics["aggregation_error"] = aggregation.aggregation_error(exact, applied)
        return arrays, metrics

    def full(self, state: dict) -> dict:
        """A client's factors with the frozen A added where it did not send them (FFA-LoRA)."""
        return {**self.frozen, **state} if self.method == "ffa" else state


def server_backbone(run) -> task.Backbone:
    if run.config.model_path:
        return task.stable_diffusion_backbone(run.config, run.data)
    base, card = pretrained_base(run)
    return task.small_backbone(base, run.config, run.data.image_shape, card)


def pretrained_base(run):
    data = run.data
    if len(data.public) == 0:
        raise ValueError("fine-tuning needs public images to pre-train the base: give the dataset "
                         "public_classes = [...] or public_fraction = ...")
    public = ClientData(data.train_images, data.train_labels, torch.from_numpy(data.public))
    return task.pretrained_base(run.cell.dataset, run.cell.dataset_args, data, public, run.config, run.status,
                                run.resources)


def personalize(grid, state: dict) -> None:
    """Each of the round's clients fine-tunes its own copy of the global ``state`` and keeps it."""
    content = RecordDict({"arrays": ArrayRecord(state)})
    send_each(grid, {node: content for node in grid.get_node_ids()}, "query.personalize")


def send_base(grid, base) -> None:
    """Clients are not assumed to have the base: it travels once, before round 1 (counted)."""
    arrays = ArrayRecord(base.state_dict())
    send_each(grid, {node: RecordDict({"base": arrays}) for node in grid.get_node_ids()}, "query.receive_base")


_BASE_SCORES: dict = {}  # the base's quality depends only on (base, seed, evaluation): once per process
BASE_SCORES_KEPT = 16


def base_score(run, backbone) -> dict:
    """The base's quality before any round (``base_*``), scored by the harness as the cell's
    deployment is (each client asking for its own label mix), once per process for a base, split
    and evaluation."""
    cfg, cell = run.config, run.cell
    key = (cfg.model_path or task.base_key(cell.dataset, cell.dataset_args, cfg), cell.split.key(),
           json.dumps(cell.evaluation, sort_keys=True), cfg.guidance_scale)
    if key not in _BASE_SCORES:
        if len(_BASE_SCORES) >= BASE_SCORES_KEPT:
            _BASE_SCORES.pop(next(iter(_BASE_SCORES)))  # bounded: the oldest goes
        _BASE_SCORES[key] = run.score_reference(generator(run, backbone, backbone.denoiser), prefix="base_",
                                                conditional=True)
    return _BASE_SCORES[key]


def generator(run, backbone, model):
    """A client holding ``model`` generating the harness's requests ({client: Request})."""
    ev, guidance = run.cell.evaluation, run.config.guidance_scale

    def generate(requests):
        return {c: task.generate(backbone, model, r.labels, guidance, ev["sample_steps"], ev["sampler"], seed=r.seed,
                                 resources=run.resources) for c, r in requests.items()}
    return generate


def deploy(run, backbone, model, grid=None) -> dict:
    """Every client holds the fine-tuned ``model`` (or, given the ``grid``, its own personalised
    one, and generates on its own machine) and generates the classes it is asked for (the harness
    scores it), and the server holds the global model (the harness attacks it); what the harness
    measures of the global model itself: its digest and a client generating one image (all the steps)."""
    ev, guidance = run.cell.evaluation, run.config.guidance_scale

    def on_clients(requests):
        global_state = ArrayRecord(task.trainable_state(model, run.config.mode, run.config.aggregation))
        nodes = {run.partition_of(node): node for node in grid.get_node_ids()}
        contents = {nodes[c]: RecordDict({"arrays": global_state, "ask": ArrayRecord({"labels": Array(r.labels.numpy())}),
                                          "config": ConfigRecord({"seed": r.seed})}) for c, r in requests.items()}
        replies = send_each(grid, contents, "query.generate")
        return {run.partition_of(node): torch.from_numpy(r.content[EVAL_KEY]["x0"].numpy()) for node, r in replies.items()}

    run.deploy(on_clients if grid is not None else generator(run, backbone, model), conditional=True)
    run.server_holds(model, backbone.scheduler, conditional=True, encode=backbone.encode)
    steps = min(ev["sample_steps"], backbone.train_timesteps)
    return {**run.checksum(model),
            **run.client_generation(model, steps, guided=guidance != 1.0, shape=backbone.shape, conditional=True)}
