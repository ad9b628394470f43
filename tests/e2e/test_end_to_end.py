"""Real suites on Flower's simulation engine, through the CLI."""

import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_a_track_run_records_every_cell(quick_track, cli):
    """The session's track-edge-quick run (conftest's ``quick_track``), read as a user would."""
    records = cli.results(quick_track)
    keys = {"suite", "cell", "protocol", "dataset", "partitioner", "profile", "seed", "status", "error",
            "metrics", "rounds"}
    for r in records:
        assert keys <= set(r) and r["suite"] == "track-edge-quick" and r["error"] is None
        assert [x["round"] for x in r["rounds"]] == [1, 2, 3]
        assert all(math.isfinite(x["train_loss"]) for x in r["rounds"] if "train_loss" in x)
        assert r["dataset"] == "digits" and r["partition_summary"]["mean_tv_distance"] > 0.3  # Dirichlet(0.3)
        assert (Path(r["run_dir"]) / "environment.json").is_file()
        m = r["metrics"]
        assert m["feature_space"] == "digits-featnet-v1" and m["featnet_accuracy"] > 0.9
        assert all(math.isfinite(m[k]) for k in ("fid", "kid", "kid_std", "recall", "coverage", "pop_fid"))
        assert m["fid"] < m["ref_fid_noise"]  # every entry learned something in 1,000 steps of 32
        assert (Path(r["run_dir"]) / "samples.png").read_bytes()[:4] == b"\x89PNG"
    fedavg = next(r for r in records if r["protocol"] == "fedavg")
    losses = [x["eval_loss"] for x in fedavg["rounds"]]
    assert losses[2] < losses[0], losses  # learning happens on a fixed seed
    m = fedavg["metrics"]
    assert m["bytes_up"] > 4 * m["model_params"] * 10 * 3  # at least the payload: 10 clients, 3 rounds
    assert m["mia_members"] == m["mia_nonmembers"] > 100 and 0 <= m["mia_auc"] <= 1
    csv = cli("results", "--out", str(quick_track), "--format", "csv").stdout.splitlines()
    assert csv[0].startswith("suite,cell,name") and len(csv) == len(records) + 1


def test_third_party_plugin_is_listed_and_its_own_tests_pass(plugin_cli, plugin_site):
    """The template as its author has it: listed by fedfuse, and its own tests pass (fedfuse.testing
    in process, the conformance check); its track entry is test_tracks'."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    listed = plugin_cli("list", "protocols")
    assert "fedavgm" in listed.stdout and "fedfuse-fedavgm" in listed.stdout
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k", "not track_edge"],
                          cwd=ROOT / "examples" / "plugin-template", env=env, capture_output=True, text=True, timeout=900)
    tests = (ROOT / "examples" / "plugin-template" / "tests" / "test_fedavgm.py").read_text().count("\ndef test_")
    assert done.returncode == 0 and f"{tests - 1} passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


def test_a_failing_cell_is_recorded_and_the_others_complete(plugin_cli, plugin_site, shared_run):
    """The shared run of failing and hostile plugins (helpers.failing_run): it ends 1."""
    from helpers import failing_run

    out = failing_run(shared_run, plugin_site)
    by_label = {r["label"]: r for r in plugin_cli.results(out)}
    failed, ok = by_label["always-fails"], by_label["fedavgm"]
    assert failed["status"] == "failed" and "injected client failure" in failed["error"]
    assert ok["status"] == "ok" and ok["rounds"]
    # a client's failure leaves Ray and its actors healthy: the next cell finds them warm
    assert ok["metrics"]["engine_reused"] == 1.0
    error = (out / "runs" / failed["cell"] / "error.txt").read_text()
    assert "The client's traceback" in error and "raise RuntimeError(\"injected client failure\")" in error
