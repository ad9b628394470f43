"""fedavg-lora: only adapters travel, the base never changes, FedAvg of adapters is exact."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from helpers import write_suite

from fedfuse.bench.engine.flower import CellClientApp
from fedfuse.bench.engine.packing import unpacked
from fedfuse.bench.engine.services import RUN_CONFIG_KEY, ServerRun
from fedfuse.bench.suites.expand import expand
from fedfuse.bench.suites.parse import load_suite
from fedfuse.plugins.manager import registry
from fedfuse.protocols.fedavg_lora import task
from fedfuse.protocols.fedavg_lora.server_app import pretrained_base

PROTOCOLS = ('[[protocols]]\nname = "fedavg-lora"\nconfig = { pretrain_steps = 30, local_steps = 3, model = "tiny" }\n'
             '[[protocols]]\nname = "fedavg-full-finetune"\nconfig = { pretrain_steps = 30, local_steps = 3, model = "tiny" }\n')
DATASET = '[{ name = "digits", public_classes = [0, 1, 2, 3, 4] }]'


@pytest.fixture
def cells(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    return expand(load_suite(str(write_suite(tmp_path / "s.toml", PROTOCOLS, datasets=DATASET))), registry())


def client_round(cell, partition: int, arrays: ArrayRecord) -> Message:
    """One real client round through fedfuse's ClientApp (as Flower's engine would call it), its
    reply as the server's grid hands it to the protocol (unpacked: engine/packing.py)."""
    TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = 1
    context = Context(run_id=1, node_id=partition + 1, state=RecordDict(), run_config={},
                      node_config={"partition-id": partition, "num-partitions": cell.clients})
    message = Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
                      dst_node_id=partition + 1, message_type="train")
    return unpacked(CellClientApp({RUN_CONFIG_KEY: cell.to_json()})(message, context))


def test_adapter_only_averaging(cells, tmp_path):
    cell = cells[0]
    run = ServerRun(cell=cell, config=registry().get("protocols", cell.protocol).config(**cell.config), run_dir=tmp_path)
    base, _ = pretrained_base(run)
    start_base = {k: v.clone() for k, v in base.state_dict().items()}
    model = task.fine_tune_model(base, run.config)
    start = ArrayRecord(task.trainable_state(model, "lora"))
    replies = [client_round(cell, p, start) for p in range(cell.clients)]
    sent = [r.content["arrays"].to_torch_state_dict() for r in replies]
    assert set(sent[0]) == set(task.trainable_state(model, "lora"))
    assert all("lora_" in k or k.startswith("class_embedding") for k in sent[0])
    n = [r.content["metrics"]["num-examples"] for r in replies]
    aggregated, _ = FedAvg().aggregate_train(1, replies)
    for key, value in aggregated.to_torch_state_dict().items():
        expected = (n[0] * sent[0][key] + n[1] * sent[1][key]) / (n[0] + n[1])
        assert torch.allclose(value, expected, atol=1e-6), key
    assert not torch.equal(sent[0]["class_embedding.weight"], start.to_torch_state_dict()["class_embedding.weight"])
    from fedfuse.bench.engine.services import _client_run

    client_model, _ = _client_run(cell.to_json(), 0, cell.clients, None).cache["model"]
    task.load_trainable_state(client_model, aggregated.to_torch_state_dict(), "lora")
    frozen = {k.replace(".base_layer", ""): v for k, v in client_model.state_dict().items()
              if "lora_" not in k and not k.startswith("class_embedding")}
    for key, value in start_base.items():  # the base is bit-identical after a round
        if not key.startswith("class_embedding"):
            assert torch.equal(frozen[key], value), key


def framing_bound(tensors: int) -> int:
    """Flower's framing as measured: 300-500 B per tensor (its key, npy header, object ids), plus the
    message's own records (config, metrics, the harness's cost record)."""
    return 500 * tensors + 4096


@pytest.mark.slow
def test_lora_uploads_a_small_fraction_of_full_finetuning(cli, tmp_path):
    suite = write_suite(tmp_path / "s.toml", PROTOCOLS, datasets=DATASET, samples="64", sample_steps="5",
                        target="{ fid = 1e9 }", target_samples="16")
    cli.cwd = tmp_path
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    by_protocol = {r["protocol"]: r for r in cli.results(tmp_path / "out")}
    lora, full = by_protocol["fedavg-lora"], by_protocol["fedavg-full-finetune"]
    cfg = registry().get("protocols", "fedavg-lora").config(model="tiny")
    model = task.build_base((1, 8, 8), 10, "tiny", 0)
    tensors = {"fedavg-full-finetune": len(model.state_dict()),
               "fedavg-lora": len(task.trainable_state(task.add_adapters(model, cfg), "lora"))}
    for record in (lora, full):
        (rnd,) = record["rounds"]
        for client in rnd["per_client"].values():
            assert client["payload_up"] == 4 * record["metrics"]["trained_params"]
            bound = framing_bound(tensors[record["protocol"]])
            assert client["payload_up"] < client["bytes_up"] < client["payload_up"] + bound
    assert lora["metrics"]["trained_params"] < 0.05 * full["metrics"]["trained_params"]
    assert lora["metrics"]["payload_up"] < 0.05 * full["metrics"]["payload_up"]
    assert lora["metrics"]["pretrain_flops"] == full["metrics"]["pretrain_flops"] > 0  # one cached base
    assert "base_fid" in lora["metrics"] and lora["metrics"]["feature_space"] == "digits-featnet-v1"
    for record in (lora, full):  # the quality target is checked on the fine-tuned model
        assert record["rounds"][0]["target_fid"] > 0 and record["metrics"]["rounds_to_target"] == 1
    assert lora["rounds"][0]["aggregation_error"] > 0 and "aggregation_error" not in full["rounds"][0]
    assert all(0 <= r["metrics"]["mia_auc"] <= 1 and r["metrics"]["mia_members"] > 0 for r in (lora, full))


def test_the_three_ways_to_combine_lora_factors(tmp_path, monkeypatch):
    """One real client round per aggregation from the same start: FFA-LoRA clients keep the
    server's A (frozen, not sent) and the aggregate is exact; SVD re-factoring errs only by
    truncation, less than averaging A and B apart (the clients made the same updates there)."""
    from fedfuse.api import derive_seed
    from fedfuse.protocols.fedavg_lora import aggregation
    from fedfuse.protocols.fedavg_lora.server_app import strategy

    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    protocols = "".join(f'[[protocols]]\nname = "fedavg-lora"\nlabel = "{a}"\nconfig = {{ pretrain_steps = 30, '
                        f'local_steps = 3, model = "tiny", aggregation = "{a}" }}\n' for a in aggregation.AGGREGATIONS)
    errors, sent = {}, {}
    for cell in expand(load_suite(str(write_suite(tmp_path / "s.toml", protocols, datasets=DATASET))), registry()):
        run = ServerRun(cell=cell, config=registry().get("protocols", cell.protocol).config(**cell.config),
                        run_dir=tmp_path)
        model = task.fine_tune_model(pretrained_base(run)[0], run.config, derive_seed(cell.seed, task.ADAPTER_SEED_SALT))
        start = ArrayRecord(task.trainable_state(model, "lora", run.config.aggregation))
        replies = [client_round(cell, p, start) for p in range(cell.clients)]
        _, metrics = strategy(run, model).aggregate_train(1, replies)
        errors[run.config.aggregation] = metrics["aggregation_error"]
        sent[run.config.aggregation] = replies[0].content["arrays"].to_torch_state_dict()
        if run.config.aggregation == "ffa":  # the client trained B on the server's very A
            from fedfuse.bench.engine.services import _client_run

            client_model, _ = _client_run(cell.to_json(), 0, cell.clients, None).cache["model"]
            client_a = {k: v for k, v in task.trainable_state(client_model, "lora").items() if "lora_A" in k}
            assert client_a and all(torch.equal(v, task.trainable_state(model, "lora")[k]) for k, v in client_a.items())
    assert errors["ffa"] < 1e-6 < errors["svd"] < errors["fedavg-ab"]
    assert not any("lora_A" in k for k in sent["ffa"]) and set(sent["ffa"]) < set(sent["fedavg-ab"])


@pytest.mark.long
@pytest.mark.slow
def test_a_saved_stable_diffusion_directory_runs_a_round(cli, tmp_path):
    from tiny_sd import make_tiny_sd

    model_dir = make_tiny_sd(tmp_path / "tiny-sd")
    protocols = f'[[protocols]]\nname = "fedavg-lora"\nconfig = {{ model_path = "{model_dir}", local_steps = 2, batch_size = 8 }}\n'
    suite = write_suite(tmp_path / "s.toml", protocols, samples="16", sample_steps="2")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = cli.results(tmp_path / "out")
    assert record["status"] == "ok", record["error"]
    (rnd,) = record["rounds"]
    adapters = record["metrics"]["trained_params"]
    assert 0 < adapters < 0.2 * record["metrics"]["model_params"]
    assert all(c["payload_up"] == 4 * adapters and c["flops_train"] > 0 for c in rnd["per_client"].values())
    assert record["metrics"]["pretrain_flops"] == 0 and "fid" in record["metrics"]


def test_a_missing_stable_diffusion_directory_is_a_clear_error(tmp_path):
    from fedfuse.protocols.fedavg_lora.sd import check_dir

    with pytest.raises(FileNotFoundError, match="not a local diffusers Stable Diffusion directory.*loads nothing from a hub"):
        check_dir(str(tmp_path / "runwayml-sd"))
