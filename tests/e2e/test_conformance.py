"""Every built-in protocol family keeps the contract a plugin must keep (`fedfuse check protocol`):
3 clients, 2 rounds, a run with a process per message, a warm run and a client failing in
round 2 (fedfuse/bench/engine/conformance.py).

One protocol of each implementation: fixed-quant, local-only, centralized and
fedavg-full-finetune share their family's code. CI checks split diffusion (custom messages,
client state across rounds, a server that trains); fedavg, fedavg-lora and ondemand-quant are
checked in the ``long`` tier (CI runs each in the shared track run, and the template's tests
check a Flower-strategy protocol). CI's checks run in the session's shared runs' processes
(tests/shared_runs.py), the ``long`` tier's in this process: one Ray runtime serves every run.
"""

import pytest
from helpers import CLI, expect_exit, plain_run

from fedfuse.bench.engine.conformance import check


def broken_builtins(names: tuple[str, ...]) -> dict:
    broken = {}
    for name in names:
        data = {"public_classes": [0, 1, 2, 3, 4]} if name == "fedavg-lora" else {}  # the base pre-trains on these
        if failed := broken_rules(check(name, dataset_args=data)):
            broken[name] = failed
    return broken


def broken_rules(report: dict) -> list:
    """The rules a conformance report fails, or its runs where they did not end as they should."""
    failed = [r for r in report["rules"] if not r["ok"]]
    runs = [(r["run"], r["status"]) for r in report["runs"]]
    return failed or ([] if runs == [("fresh", "ok"), ("warm", "ok"), ("failing", "failed")] else report["runs"])


@pytest.mark.slow
def test_builtin_protocols_keep_the_plugin_contract(shared_run, tmp_path):
    """Split diffusion (custom messages, client state across rounds, a server that trains: the
    shared run helpers.SHARED_RUNS["conformance"], ``fedfuse check protocol split-diffusion``);
    and fedfuse.testing's in-process run of the checked cell trains the very model the
    simulation engine trained (3 clients, 2 of them a round, 2 rounds), scored the same to the
    last bit."""
    import json

    from fedfuse.bench.engine.conformance import tiny_config
    from fedfuse.plugins.manager import registry
    from fedfuse.testing import run_in_process, tiny_cell

    runs = plain_run(shared_run, "conformance")
    expect_exit(runs, "0")
    assert not broken_rules(json.loads((runs.parent / "conformance.out").read_text()))
    (warm,) = CLI(tmp_path).results(runs / "warm")
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
def test_a_client_that_keeps_its_state_outside_the_context_fails_the_check(plugin_cli: CLI, plugin_site, shared_run):
    """The fixture ``forgetful`` counts each client's messages in a module global: a warm
    process carries the count on (and into the other clients'), a process per message loses
    it. The check says which rule, and that the protocol is otherwise deterministic (the
    shared run helpers.PLUGIN_RUNS["forgetful"]: ``fedfuse check protocol forgetful``)."""
    import json

    from helpers import plugin_run

    runs = plugin_run(shared_run, plugin_site, "forgetful")
    expect_exit(runs, "1")
    (warm,) = plugin_cli.results(runs / "warm")  # 2 clients, 2 rounds: 2 messages each
    assert len(warm["rounds"]) == 2 and (warm["metrics"]["seen_first"], warm["metrics"]["seen_last"]) == (1, 2)
    rules = {r["rule"]: r for r in json.loads((runs.parent / "forgetful.out").read_text())["rules"]}
    assert not rules["client state lives in the Context"]["ok"]
    assert "train_loss 4.0 vs 6.0" in rules["client state lives in the Context"]["seen"]  # 1+1+1+1 vs 1+1+2+2
    assert rules["deterministic for a seed"]["ok"] and rules["a failed client fails the cell by name"]["ok"]
