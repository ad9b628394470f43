"""Every built-in protocol family keeps the contract a plugin must keep (`fedfuse check protocol`).

One protocol of each implementation: fixed-quant, local-only, centralized and
fedavg-full-finetune share their family's code. The checks run in this process, so the runs
after the first also show that one Ray runtime serves several cells.
"""

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

    verdict = config_rule(ProtocolSpec("lenient", "1", Lenient, server=None, client_app=None))
    assert not verdict["ok"]
