"""Every built-in protocol family keeps the contract a plugin must keep (`fedfuse check protocol`).

One protocol of each implementation: fixed-quant, local-only, centralized and
fedavg-full-finetune share their family's code. The checks run in this process, so the runs
after the first also show that one Ray runtime serves several cells.
"""

import pytest

from fedfuse.bench.engine.conformance import check


@pytest.mark.slow
def test_builtin_protocols_keep_the_plugin_contract():
    """One test, not one per protocol: in one process the first check starts Ray and the others
    reuse it (two test workers would each start their own)."""
    broken = {}
    for name in ("fedavg", "fedavg-lora", "split-diffusion", "ondemand-quant"):
        data = {"public_classes": [0, 1, 2, 3, 4]} if name == "fedavg-lora" else {}  # the base pre-trains on these
        report = check(name, dataset_args=data)
        failed = [r for r in report["rules"] if not r["ok"]]
        runs = [(r["status"], r.get("engine_reused")) for r in report["runs"]]
        if failed or runs != [("ok", runs[0][1]), ("ok", 1.0)]:  # the second run found Ray running
            broken[name] = failed or report["runs"]
    assert not broken, broken
