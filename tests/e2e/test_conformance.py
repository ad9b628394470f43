"""Every built-in protocol family keeps the contract a plugin must keep (`fedfuse check protocol`):
3 clients, 2 rounds, a run with a process per message, a warm run and a client failing in
round 2 (fedfuse/bench/engine/conformance.py).

One protocol of each implementation: fixed-quant, local-only, centralized and
fedavg-full-finetune share their family's code. CI checks split diffusion (custom messages,
client state across rounds, a server that trains); fedavg, fedavg-lora and ondemand-quant are
checked in the ``long`` tier (CI runs each in the shared track run, and the template's tests
check a Flower-strategy protocol). The checks run in this process, so one Ray runtime serves
every run.
"""

import pytest
from helpers import CLI

from fedfuse.bench.engine.conformance import check


def broken_builtins(names: tuple[str, ...], keep=None) -> dict:
    broken = {}
    for name in names:
        data = {"public_classes": [0, 1, 2, 3, 4]} if name == "fedavg-lora" else {}  # the base pre-trains on these
        report = check(name, dataset_args=data, out=keep / name if keep else None)
        failed = [r for r in report["rules"] if not r["ok"]]
        runs = [(r["run"], r["status"]) for r in report["runs"]]
        if failed or runs != [("fresh", "ok"), ("warm", "ok"), ("failing", "failed")]:
            broken[name] = failed or report["runs"]
    return broken


@pytest.mark.slow
def test_builtin_protocols_keep_the_plugin_contract(tmp_path):
    """Split diffusion (custom messages, client state across rounds, a server that trains); and
    fedfuse.testing's in-process run of the checked cell trains the very model the simulation
    engine trained (3 clients, 2 of them a round, 2 rounds), scored the same to the last bit."""
    from fedfuse.bench.engine.conformance import tiny_config
    from fedfuse.plugins.manager import registry
    from fedfuse.testing import run_in_process, tiny_cell

    assert not broken_builtins(("split-diffusion",), keep=tmp_path)
    (warm,) = CLI(tmp_path).results(tmp_path / "split-diffusion" / "warm")
    cell = tiny_cell("split-diffusion", tiny_config(registry().get("protocols", "split-diffusion")), clients=3,
                     rounds=2, participation=2, samples=64, sample_steps=5, mia_samples=32)
    mine = run_in_process(cell, tmp_path / "in-process")
    for key in ("model_sha256", "fid", "payload_up", "client_flops", "server_flops", "train_loss", "mia_auc", "nn_mse"):
        assert mine[key] == warm["metrics"][key], key


@pytest.mark.slow
@pytest.mark.long
def test_the_other_builtin_families_keep_the_plugin_contract():
    assert not broken_builtins(("fedavg", "fedavg-lora", "ondemand-quant"))


@pytest.mark.slow
def test_a_client_that_keeps_its_state_outside_the_context_fails_the_check(plugin_cli: CLI, tmp_path):
    """The fixture ``forgetful`` counts each client's messages in a module global: a warm
    process carries the count on (and into the other clients'), a process per message loses
    it. The check says which rule, and that the protocol is otherwise deterministic."""
    import json

    done = plugin_cli("check", "protocol", "forgetful", "--rounds", "2", "--clients", "2", "--format", "json",
                      "--keep", str(tmp_path / "runs"))
    assert done.returncode == 1, done.stderr[-3000:]
    (warm,) = plugin_cli.results(tmp_path / "runs" / "warm")  # 2 clients, 2 rounds: 2 messages each
    assert len(warm["rounds"]) == 2 and (warm["metrics"]["seen_first"], warm["metrics"]["seen_last"]) == (1, 2)
    rules = {r["rule"]: r for r in json.loads(done.stdout)["rules"]}
    assert not rules["client state lives in the Context"]["ok"]
    assert "train_loss 4.0 vs 6.0" in rules["client state lives in the Context"]["seen"]  # 1+1+1+1 vs 1+1+2+2
    assert rules["deterministic for a seed"]["ok"] and rules["a failed client fails the cell by name"]["ok"]
