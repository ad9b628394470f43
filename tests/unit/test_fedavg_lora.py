"""fedavg-lora: only adapters travel, the base never changes, FedAvg of adapters is exact."""

import pytest
import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg
from helpers import DATASET, PROTOCOLS, client_round, write_suite

from fedfuse.bench.engine.services import ServerRun
from fedfuse.bench.suites.expand import expand
from fedfuse.bench.suites.parse import load_suite
from fedfuse.plugins.manager import registry
from fedfuse.protocols.fedavg_lora import task
from fedfuse.protocols.fedavg_lora.server_loop import pretrained_base


@pytest.fixture
def cells(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    return expand(load_suite(str(write_suite(tmp_path / "s.toml", PROTOCOLS, datasets=DATASET))), registry())


def test_adapter_only_averaging(cells, tmp_path):
    cell = cells[0]
    run = ServerRun(cell=cell, config=registry().get("protocols", cell.protocol).config(**cell.config), run_dir=tmp_path)
    base, _ = pretrained_base(run)
    start_base = {k: v.clone() for k, v in base.state_dict().items()}
    model = task.fine_tune_model(base, run.config)
    start = ArrayRecord(task.trainable_state(model, "lora"))
    replies = [client_round(cell, start, p) for p in range(cell.clients)]
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


def test_the_three_ways_to_combine_lora_factors(tmp_path, monkeypatch):
    """One real client round per aggregation from the same start: FFA-LoRA clients keep the
    server's A (frozen, not sent) and the aggregate is exact; SVD re-factoring errs only by
    truncation, less than averaging A and B apart (the clients made the same updates there)."""
    from fedfuse.api import derive_seed
    from fedfuse.protocols.fedavg_lora import aggregation
    from fedfuse.protocols.fedavg_lora.server_loop import strategy

    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    protocols = "".join(f'[[protocols]]\nname = "fedavg-lora"\nlabel = "{a}"\nconfig = {{ pretrain_steps = 30, '
                        f'local_steps = 3, model = "tiny", aggregation = "{a}" }}\n' for a in aggregation.AGGREGATIONS)
    errors, sent = {}, {}
    for cell in expand(load_suite(str(write_suite(tmp_path / "s.toml", protocols, datasets=DATASET))), registry()):
        run = ServerRun(cell=cell, config=registry().get("protocols", cell.protocol).config(**cell.config),
                        run_dir=tmp_path)
        model = task.fine_tune_model(pretrained_base(run)[0], run.config, derive_seed(cell.seed, task.ADAPTER_SEED_SALT))
        start = ArrayRecord(task.trainable_state(model, "lora", run.config.aggregation))
        replies = [client_round(cell, start, p) for p in range(cell.clients)]
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


def test_a_missing_stable_diffusion_directory_is_a_clear_error(tmp_path):
    from fedfuse.protocols.fedavg_lora.sd import check_dir

    with pytest.raises(FileNotFoundError, match="not a local diffusers Stable Diffusion directory.*loads nothing from a hub"):
        check_dir(str(tmp_path / "runwayml-sd"))


def test_adapters_reach_every_attention_level_and_the_convolutions_when_asked():
    """base-attn attends at both resolutions, so LoRA on its projections trains about twice what
    it trains on the small base's one level; "attn+conv" adds the ResNet convolutions."""
    from fedfuse.protocols.fedavg_lora.plugin import LoraFineTuneConfig

    assert task.target_modules(["attn+conv"]) == ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]
    assert task.target_modules(["to_q", "attn"]) == ["to_q", "to_k", "to_v", "to_out.0"]
    trained = {}
    for preset, targets in (("small", ("attn",)), ("base-attn", ("attn",)), ("base-attn", ("attn+conv",))):
        base = task.build_base((1, 8, 8), 10, preset, 0)
        blocks = [type(b).__name__ for b in (*base.down_blocks, *base.up_blocks)]
        assert blocks.count("AttnDownBlock2D") == (2 if preset == "base-attn" else 1)
        model = task.fine_tune_model(base, LoraFineTuneConfig(model=preset, rank=4, alpha=4.0, targets=targets))
        trained[preset, targets] = sum(v.numel() for v in task.trainable_state(model, "lora").values())
    assert trained["small", ("attn",)] == 9472  # the figure for the old study's base
    # r = 4 on 4 projections: 2,048 values an attention block at 64 channels, 1,024 at 32; base-attn
    # has 6 such blocks at 64 and 5 at 32, plus its 1,280-value class embedding
    assert trained["base-attn", ("attn",)] == 6 * 2048 + 5 * 1024 + 1280 == 18688
    # attn+conv adds in*4*9 + 4*out on conv1 and conv2 of its 11 ResNets (skip inputs included)
    assert trained["base-attn", ("attn+conv",)] == 18688 + 57856
