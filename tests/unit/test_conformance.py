"""The conformance check's parts that need no run: its config, its input errors, its verdicts."""

import dataclasses

import pytest

from fedfuse.bench.engine.conformance import TINY, tiny_config
from fedfuse.plugins.manager import registry


def test_the_tiny_config_touches_only_fields_a_protocol_has():
    fedavg = registry().get("protocols", "fedavg")
    assert tiny_config(fedavg) == {"model": "tiny", "local_steps": 2, "batch_size": 8, "warmup_steps": 1}
    assert tiny_config(fedavg, {"local_steps": 5})["local_steps"] == 5
    assert set(tiny_config(registry().get("protocols", "split-diffusion"))) <= set(TINY)


def test_a_config_that_accepts_anything_fails_the_strict_config_rule():
    from fedfuse.bench.engine.conformance import config_rule
    from fedfuse.plugins import ProtocolSpec

    class Lenient:  # not a dataclass: any key is taken
        def __init__(self, **anything):
            pass

    @dataclasses.dataclass
    class Accepting:  # a dataclass that happens to take the probe key
        no_such_key: int = 0

    verdict = config_rule(ProtocolSpec("lenient", "1", Lenient, server=None, client_app=None))
    assert not verdict["ok"] and verdict["seen"].startswith("TypeError: ")  # not a config fedfuse can read
    verdict = config_rule(ProtocolSpec("accepting", "1", Accepting, server=None, client_app=None))
    assert verdict == {"rule": "config rejects unknown keys", "ok": False, "seen": "an unknown key 'no_such_key' was accepted"}
    assert config_rule(registry().get("protocols", "fedavg")) == {"rule": "config rejects unknown keys", "ok": True,
                                                                  "seen": "unknown key 'no_such_key'"}


def test_check_sizes_are_options_and_errors_name_the_users_input():
    """rounds and clients are options, not config keys; a wrong key is named before any file is
    written (no temporary suite in the message)."""
    from fedfuse.api import ConfigError, check_protocol

    with pytest.raises(ConfigError, match="unknown key 'rounds'.*--rounds") as err:
        check_protocol("fedavg", {"rounds": 2})
    assert "suite.toml" not in str(err.value) and "check protocol fedavg config" in str(err.value)
    with pytest.raises(ConfigError, match="clients 2-100"):
        check_protocol("fedavg", rounds=2, clients=1)


def record(status="ok", **metrics):
    return {"status": status, "metrics": metrics, "error": None}


def test_state_verdicts_tell_state_outside_the_context_from_nondeterminism():
    from fedfuse.bench.engine.conformance import state_rules

    def verdicts(**records):
        return [r["ok"] for r in state_rules(records)]  # [deterministic, state in the Context]

    assert verdicts(fresh=record(fid=1.0), warm=record(fid=1.0)) == [True, True]
    assert verdicts(fresh=record(fid=1.0), warm=record(fid=2.0), **{"fresh-again": record(fid=1.0)}) == [True, False]
    assert verdicts(fresh=record(fid=1.0), warm=record(fid=2.0), **{"fresh-again": record(fid=3.0)}) == [False, False]


def test_a_client_failure_must_fail_the_cell_naming_the_client():
    from fedfuse.bench.engine.conformance import failure_rule

    named = {"status": "failed", "error": "ClientFailure: client 1 (node 7) failed: injected failure of client 1 in round 2"}
    assert failure_rule(named)["ok"]
    assert not failure_rule({"status": "ok", "error": None})["ok"]
    assert not failure_rule({"status": "failed", "error": "RuntimeError: the server loop did not finish"})["ok"]
