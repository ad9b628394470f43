"""fedavg-lora: only adapters travel, the base never changes, FedAvg of adapters is exact."""

import pytest
from helpers import expect_exit, plain_run, write_suite

from fedfuse.plugins.manager import registry
from fedfuse.protocols.fedavg_lora import task


def framing_bound(tensors: int) -> int:
    """Flower's framing as measured: 300-500 B per tensor (its key, npy header, object ids), plus the
    message's own records (config, metrics, the harness's cost record)."""
    return 500 * tensors + 4096


@pytest.mark.slow
def test_lora_uploads_a_small_fraction_of_full_finetuning(cli, shared_run):
    """The shared run helpers.SHARED_RUNS["lora"]; and personalised adapters over attention and
    convolutions (helpers.PERSONAL): more values trained, and the clients' personalisation
    counted in the last round (the adapter down again, its steps)."""
    out = plain_run(shared_run, "lora")
    expect_exit(out, "0")
    by_label = {r["label"]: r for r in cli.results(out)}
    lora, full, personal = by_label["fedavg-lora"], by_label["fedavg-full-finetune"], by_label["personal"]
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
    m = lora["metrics"]
    assert m["base_fid"] > 0 and m["feature_space"] == "digits-featnet-v1"
    # the base is scored as the row is (run.score_reference): one distribution, one set of references
    assert (m["base_eval_distribution"], m["base_ref_fid_noise"]) == (m["eval_distribution"], m["ref_fid_noise"])
    for record in (lora, full):  # the quality target is checked on the fine-tuned model
        assert record["rounds"][0]["target_fid"] > 0 and record["metrics"]["rounds_to_target"] == 1
    assert lora["rounds"][0]["aggregation_error"] > 0 and "aggregation_error" not in full["rounds"][0]
    assert all(0 <= r["metrics"]["mia_auc"] <= 1 and r["metrics"]["mia_members"] > 0 for r in (lora, full))
    # clients holding the global model generate on their own; a personalised client is sent the
    # global adapters with the harness's request (64 images here)
    assert lora["metrics"]["client_gen_bytes"] == 0 == lora["metrics"]["client_gen_net_s"]
    m = personal["metrics"]
    assert m["client_gen_bytes"] > 4 * m["trained_params"] / 64
    assert m["trained_params"] > 2 * lora["metrics"]["trained_params"]
    assert m["trained_share"] == pytest.approx(m["trained_params"] / m["model_params"]) and m["fid"] > 0
    (mine,), (theirs,) = personal["rounds"], lora["rounds"]
    for client, figures in mine["per_client"].items():  # 3 local steps, then 3 of personalisation
        assert figures["flops_train"] > 1.5 * theirs["per_client"][client]["flops_train"]
        assert figures["payload_down"] == 2 * figures["payload_up"]  # the adapter, and the global one to personalise


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
