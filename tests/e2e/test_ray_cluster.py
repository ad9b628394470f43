"""`fedfuse run --ray-address`: Flower's simulation on a Ray cluster fedfuse did not start.

A real two-node cluster on this machine (`ray start --head`, then a second `ray start` that
joins it, one CPU each), as on two machines. In the `long` tier (about a minute; not in CI):
`pytest -m long tests/e2e/test_ray_cluster.py`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from helpers import write_suite

from fedfuse.deploy.local import free_port

RAY = str(Path(sys.executable).parent / "ray")
NODE = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]


@pytest.fixture
def cluster():
    """A head and a second node, each with one CPU; its processes ended afterwards by their
    session folder (``ray stop`` would end every Ray on the machine, other tests' included)."""
    temp, port = tempfile.mkdtemp(prefix="r", dir="/tmp"), free_port()  # a short path: Ray's sockets live there
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
                        *NODE], check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *NODE], check=True, capture_output=True,
                       timeout=120)
        yield f"127.0.0.1:{port}", temp
    finally:
        members = [p for p in psutil.process_iter() if temp in " ".join(cmdline(p))]
        for p in members:
            p.kill()
        psutil.wait_procs(members, timeout=10)


def cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def raylets(temp: str) -> set[int]:
    return {p.pid for p in psutil.process_iter() if any("raylet" in a for a in cmdline(p)[:1]) and temp in " ".join(cmdline(p))}


@pytest.mark.slow
@pytest.mark.long
def test_a_cell_runs_on_both_nodes_of_a_ray_cluster_and_leaves_it_running(cli, tmp_path, cluster):
    address, temp = cluster
    nodes = raylets(temp)
    assert len(nodes) == 2
    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = 2 }\n',
                        samples="16", sample_steps="2")
    runner = subprocess.Popen([sys.executable, "-m", "fedfuse.bench.cli", "run", str(suite), "--out", str(tmp_path / "out"),
                               "--ray-address", address], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    hosts = set()  # the raylets the cell's ClientApp actors ran under
    while runner.poll() is None:
        hosts |= {p.ppid() for p in psutil.process_iter() if "ClientAppActor" in " ".join(cmdline(p)) and p.ppid() in nodes}
        time.sleep(0.2)
    assert runner.returncode == 0, runner.stderr.read()[-3000:]
    (record,) = cli.results(tmp_path / "out")
    m = record["metrics"]
    assert (m["ray_nodes"], m["ray_cpus"]) == (2, 2.0)  # the cluster's, not this machine's cores
    assert hosts == nodes  # one client on each node: each has one CPU
    assert raylets(temp) == nodes  # fedfuse disconnected; the cluster it did not start runs on
