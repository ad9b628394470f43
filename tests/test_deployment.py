"""Flower's deployment engine: `fedfuse deploy local --tls` and `fedfuse run --backend deployment`.

Real processes: a SuperLink and two SuperNodes over TLS on 127.0.0.1, the same cells run in
simulation for comparison, and a clean shutdown at the end. The ``long`` tests (not in CI:
``pytest -m long``) add full-model FedAvg's parity and a SuperNode killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import CLI, write_suite

pytestmark = pytest.mark.slow

SPLIT = ('[[protocols]]\nname = "split-diffusion"\n'
         'config = { model = "tiny", client_model = "tiny", cut_ratio = 0.4, local_steps = 4, server_steps = 4, share_size = 32 }\n')
SPLIT_MATRIX = {"partitioners": '[{ name = "groups", by = "label" }]', "samples": "32", "sample_steps": "6"}


class Deployment:
    """`fedfuse deploy local` in the background, as a user would start it."""

    def __init__(self, out: Path):
        self.out = out
        self.proc = subprocess.Popen([sys.executable, "-m", "fedfuse.bench.cli", "deploy", "local", "--nodes", "2",
                                      "--tls", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = []
        for line in self.proc.stdout:  # blocks until it reports ready (or exits)
            self.lines.append(line)
            if "deployment ready" in line:
                break
        assert self.proc.poll() is None, "".join(self.lines)

    @property
    def info(self) -> dict:
        return json.loads((self.out / "deploy.json").read_text())

    def run_args(self) -> list[str]:
        return ["--backend", "deployment", "--superlink", self.info["address"],
                "--root-certificates", self.info["root_certificates"]]

    def family(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def stop(self) -> tuple[int, float, list]:
        """Ctrl-C; (exit code, seconds it took, processes left running)."""
        family, started = self.family(), time.time()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        _, alive = psutil.wait_procs(family, timeout=10)
        return code, time.time() - started, alive


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployed = Deployment(tmp_path_factory.mktemp("deploy"))
    yield deployed
    if deployed.proc.poll() is None:
        deployed.stop()


def by_label(cli: CLI, out: Path) -> dict:
    return {r["label"]: r for r in cli.results(out)}


def run_both(cli: CLI, deployment, tmp_path, suite: str, only: list[str]) -> dict:
    """{backend: {label: record}} of the same suite run on the deployment and in simulation."""
    runs = {}
    for backend, extra in (("deployment", deployment.run_args()), ("simulation", [])):
        out = tmp_path / backend
        done = cli("run", suite, "--out", str(out), *only, *extra, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[backend] = by_label(cli, out)
    return runs


def assert_parity(dep: dict, sim: dict) -> None:
    assert dep["backend"] == "deployment" and sim["backend"] == "simulation"
    # The same computation: identical payloads, FLOPs and final model, bit for bit.
    for key in ("payload_up", "payload_down", "client_flops", "server_flops", "messages", "model_sha256", "fid"):
        assert dep[key] == sim[key], key
    # Wire bytes differ only in message metadata (ids and task ids the deployment stamps).
    for key in ("bytes_up", "bytes_down"):
        assert abs(dep[key] - sim[key]) <= 64 * dep["messages"], (key, dep[key], sim[key])
    # Flower's own count of the run's traffic: at least fedfuse's (it adds its control traffic,
    # the handshake and the samples returned for scoring), not much more.
    assert dep["bytes_up"] <= dep["flower_inbound_bytes"] <= 1.05 * dep["bytes_up"] + 100_000
    assert dep["exchange_s"] > 0 and sim["exchange_s"] > 0


def test_tls_deployment_matches_simulation(deployment, tmp_path):
    """Split diffusion (custom messages, client state across rounds), one round at tiny sizes."""
    assert Path(deployment.info["root_certificates"]).is_file() and deployment.info["tls"]
    split = write_suite(tmp_path / "split.toml", SPLIT, **SPLIT_MATRIX)
    runs = run_both(CLI(tmp_path), deployment, tmp_path, str(split), [])
    assert_parity(runs["deployment"]["split-diffusion"]["metrics"], runs["simulation"]["split-diffusion"]["metrics"])


@pytest.mark.long
def test_fedavg_smoke_cell_matches_simulation(deployment, tmp_path):
    """Full-model FedAvg (a hundred arrays a message: the deployment's slowest case), two rounds."""
    runs = run_both(CLI(tmp_path), deployment, tmp_path, "smoke", ["--only", "*seed0"])
    assert_parity(runs["deployment"]["fedavg"]["metrics"], runs["simulation"]["fedavg"]["metrics"])


@pytest.mark.long
def test_a_client_that_disconnects_fails_its_cell_and_the_next_cell_runs(deployment, tmp_path):
    cli = CLI(tmp_path)
    long = write_suite(tmp_path / "long.toml", SPLIT, **SPLIT_MATRIX, rounds="6")
    out = tmp_path / "out"
    env = dict(os.environ, COLUMNS="200")
    runner = subprocess.Popen([sys.executable, "-m", "fedfuse.bench.cli", "run", str(long), "--out", str(out),
                               *deployment.run_args()], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(p.stat().st_size for p in out.glob("runs/*/rounds.jsonl")), 300)
    node = psutil.Process(deployment.info["pids"]["supernode1"])
    for p in [node, *node.children(recursive=True)]:  # the node and its ClientApp vanish at once
        p.kill()
    _, stderr = runner.communicate(timeout=600)
    assert runner.returncode == 1, stderr[-3000:]  # a failed cell, recorded; not a crash
    (failed,) = cli.results(out)
    assert failed["status"] == "failed" and "client 1" in failed["error"] and "Node Unavailable" in failed["error"]
    assert 1 <= len(failed["rounds"]) < 6  # the rounds before the loss are kept
    # The SuperLink stayed up; the supervisor restarted the node; the next cell runs.
    assert deployment.proc.poll() is None and deployment.info["pids"]["supernode1"] != node.pid
    short = write_suite(tmp_path / "short.toml", SPLIT, **SPLIT_MATRIX)
    done = cli("run", str(short), "--out", str(tmp_path / "next"), *deployment.run_args(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_ctrl_c_stops_the_whole_deployment(deployment):
    """Runs last: Ctrl-C stops everything `deploy local` started, children included, in bounded time."""
    code, took, alive = deployment.stop()
    assert code == 0 and took < 60 and not alive, alive


def wait_for(condition, timeout: float) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.5)
