"""Flower's deployment engine: `fedfuse deploy local --tls` and `fedfuse run --backend deployment`.

Real processes: a SuperLink and two authenticated SuperNodes over TLS on 127.0.0.1, the same
cells run in simulation for comparison, SuperNodes the SuperLink does not know refused, and a
clean shutdown at the end. The ``long`` tests (not in CI: ``pytest -m long``) add the parity of
every built-in protocol, full-model FedAvg's on the smoke cell, and a SuperNode killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from helpers import CLI, split_sweep_run, split_sweep_suite, write_suite

from fedfuse.deploy.engine import CONNECTION, flower_command, flower_env
from fedfuse.deploy.local import base_env, free_port
from fedfuse.deploy.tls import make_node_key

SPLIT = ('[[protocols]]\nname = "split-diffusion"\n'
         'config = { model = "tiny", client_model = "tiny", cut_ratio = 0.4, local_steps = 4, server_steps = 4, share_size = 32 }\n')
FOUR = (SPLIT + '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = 2 }\n'
        '[[protocols]]\nname = "fedavg-lora"\nconfig = { model = "tiny", pretrain_steps = 20, local_steps = 2 }\n'
        '[[protocols]]\nname = "ondemand-quant"\nconfig = { model = "tiny", local_steps = 2 }\n')
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
def deployments(tmp_path_factory):
    """The module's deployment, started once and shared; started again only where a test
    (Ctrl-C's) stopped it before another test needs one, whatever order a worker runs them in."""
    started: list[Deployment] = []

    def live() -> Deployment:
        if not started or started[-1].proc.poll() is not None:
            started.append(Deployment(tmp_path_factory.mktemp("deploy")))
        return started[-1]

    yield live
    for deployed in started:
        if deployed.proc.poll() is None:
            deployed.stop()


@pytest.fixture
def deployment(deployments) -> Deployment:
    return deployments()


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


@pytest.mark.slow
def test_tls_deployment_matches_simulation(deployment, tmp_path, shared_run):
    """Split diffusion (custom messages, client state), one round at tiny sizes, against the same
    cell of the shared simulation sweep (helpers.split_sweep_run); every ClientApp task in the
    nodes' warm executors, none in a process of its own."""
    assert Path(deployment.info["root_certificates"]).is_file() and deployment.info["tls"]
    cli, simulated = CLI(tmp_path), split_sweep_run(shared_run)
    done = cli("run", str(split_sweep_suite(simulated)), "--out", str(tmp_path / "dep"), "--only", "batches",
               *deployment.run_args(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_parity(by_label(cli, tmp_path / "dep")["batches"]["metrics"], by_label(cli, simulated)["batches"]["metrics"])
    assert_warm(deployment, {"train.local_and_cut": 1})


def assert_warm(deployment, tasks: dict[str, int]) -> None:
    """Each node's executor ran at least these tasks (type: count), and its SuperNode started no
    ClientApp process."""
    for partition in (0, 1):
        assert "Start `flwr-clientapp` process" not in (deployment.out / f"supernode{partition}.log").read_text()
        served = (deployment.out / f"executor{partition}.log").read_text()
        for task, count in tasks.items():
            assert served.count(f"fedfuse executor: {task},") >= count, (task, served[-2000:])


@pytest.mark.slow
@pytest.mark.long
def test_every_builtin_protocol_trains_the_same_model_in_both_engines(deployment, tmp_path):
    """fedavg, fedavg-lora, split diffusion (custom messages, client state across rounds) and
    ondemand-quant, 2 rounds each at tiny sizes on 2 authenticated SuperNodes over TLS:
    bit-identical to the simulation. Every ClientApp task ran in the nodes' warm executors, none
    in a process of its own."""
    assert Path(deployment.info["root_certificates"]).is_file() and deployment.info["tls"]
    suite = write_suite(tmp_path / "four.toml", FOUR, rounds="2", samples="32", sample_steps="6",
                        datasets='[{ name = "digits", public_classes = [0, 1, 2, 3, 4] }]')
    runs = run_both(CLI(tmp_path), deployment, tmp_path, str(suite), [])
    assert sorted(runs["deployment"]) == ["fedavg", "fedavg-lora", "ondemand-quant", "split-diffusion"]
    for label, sim in runs["simulation"].items():
        assert_parity(runs["deployment"][label]["metrics"], sim["metrics"])
    # 2 rounds of fedavg, fedavg-lora, ondemand-quant; split diffusion's rounds have a type of their own
    assert_warm(deployment, {"train": 6, "train.local_and_cut": 2})


def test_flower_waits_are_capped_where_fedfuse_starts_flower():
    """The SuperNode's 3 s idle poll, its reply wait, and the 1 s, 2 s, 4 s... retries for arrays
    still in flight (flower_patches.py: node, ServerApp, executor), bounded by time rather than by
    tries, in a fresh process as `deploy local` starts them; and the other two patches find what
    they replace (the node's task time-out, the SuperLink's SuperExec command)."""
    check = ("from fedfuse.deploy.flower_patches import shorten_supernode_waits, shorten_grid_pulls, shorten_task_pulls\n"
             "assert shorten_supernode_waits(0.05) and shorten_grid_pulls(0.05) and shorten_task_pulls(0.05)\n"
             "from flwr.supernode import start_client_internal as node\n"
             "from flwr.superlink.grid import http_grid as grid\n"
             "from flwr.supernode.runtime import run_clientapp as task\n"
             "assert node.time.cap_s == 0.05 and node.time.time() > 0\n"
             "for fetch in (node.pull_objects, grid.pull_objects, task.pull_and_inflate_object_from_tree):\n"
             "    assert fetch.keywords == {'initial_backoff': 0.01, 'backoff_cap': 0.05,\n"
             "                              'max_tries_per_object': None}, fetch.keywords\n"
             # the node's patience with a silent executor, and the SuperLink's SuperExec that reaps
             "from fedfuse.deploy.flower_patches import shorten_task_ttl, reaped_superexec\n"
             "from flwr.supercore.corestate import in_memory_corestate as state\n"
             "assert shorten_task_ttl(10) and state.HEARTBEAT_DEFAULT_INTERVAL * state.HEARTBEAT_PATIENCE == 10\n"
             "import importlib; link = importlib.import_module('flwr.superlink.cli.flower_superlink')\n"
             "assert reaped_superexec()\n"
             "argv = link._get_superexec_command('127.0.0.1:1', None, None, 1, False)\n"
             "assert argv[1:4] == ['-m', 'fedfuse.deploy.flower_patches', 'superexec'] and '--insecure' in argv, argv\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_runner_sees_its_serverapp_process_or_asks_flower(tmp_path):
    from fedfuse.deploy.engine import server_running
    from fedfuse.deploy.flower_app import this_process

    record = tmp_path / "serverapp.json"
    assert not server_running(record)  # not started yet: ask Flower
    record.write_text(json.dumps(this_process()))
    assert server_running(record)
    # A process that has exited but that its launcher never waited for (Flower's SuperExec
    # starts ServerApps with a bare Popen): a zombie, which still has its pid and start time.
    zombie = subprocess.Popen([sys.executable, "-c", "from fedfuse.deploy.flower_app import this_process as p; "
                               "import json; print(json.dumps(p()), flush=True)"], stdout=subprocess.PIPE, text=True)
    record.write_text(zombie.stdout.readline())
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)
    assert not server_running(record)
    zombie.wait()
    assert not server_running(record)  # reaped: gone (or its pid names another process)


@pytest.mark.slow
@pytest.mark.long
def test_fedavg_smoke_cell_matches_simulation(deployment, tmp_path):
    """Full-model FedAvg (a hundred arrays a message: the deployment's slowest case), two rounds."""
    runs = run_both(CLI(tmp_path), deployment, tmp_path, "smoke", ["--only", "*seed0"])
    assert_parity(runs["deployment"]["fedavg"]["metrics"], runs["simulation"]["fedavg"]["metrics"])


@pytest.mark.slow
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


@pytest.mark.slow
def test_only_registered_supernodes_get_in(deployment, tmp_path):
    """Node authentication: the CA lets anyone reach the SuperLink over TLS, but only the keys
    `deploy local` registered get in. A SuperNode without a key cannot register itself, one with
    an unknown key cannot activate, and that key cannot pull a real node's messages either."""
    assert deployment.info["node_auth"]
    wait_for(lambda: sorted(supernodes(deployment).values()) == ["online", "online"], 120)
    real = supernodes(deployment)
    unknown = make_node_key(tmp_path / "keys", "stranger")
    anonymous = stranger(deployment, tmp_path / "anonymous")
    unregistered = stranger(deployment, tmp_path / "unregistered", "--auth-supernode-private-key", str(unknown["key"]))
    for (code, log), refusal in ((anonymous, "[code: 2001]"),  # FLEET_SUPERNODE_REGISTRATION_DISABLED
                                 (unregistered, "[code: 2004]")):  # FLEET_NODE_ACTIVATION_FAILED
        assert code == 1 and refusal in log and "SuperNode ID:" not in log, log[-2000:]
    assert pull_status(deployment, int(next(iter(real))), unknown["key"]) == httpx.codes.UNAUTHORIZED
    assert supernodes(deployment) == real  # nobody else was let in


def supernodes(deployment) -> dict[str, str]:
    """{node id: status} of the SuperNodes the SuperLink knows (`flwr supernode ls`)."""
    done = subprocess.run([flower_command("flwr"), "supernode", "ls", CONNECTION, "--format", "json"],
                          capture_output=True, text=True, env=flower_env(Path(deployment.info["flower_cli_home"])),
                          timeout=120)
    return {node["node-id"]: node["status"] for node in json.loads(done.stdout)["nodes"]}


def stranger(deployment, home: Path, *key_args: str) -> tuple[int, str]:
    """Run a SuperNode that has the CA, as any machine could, and none of the registered keys:
    (its exit code, its log)."""
    home.mkdir(parents=True)
    log = home / "supernode.log"
    with log.open("w") as out:  # a file, not a pipe: its SuperExec child may hold the pipe open
        node = subprocess.Popen([flower_command("flower-supernode"), "--superlink", deployment.info["address"],
                                 "--root-certificates", deployment.info["root_certificates"],
                                 "--port", str(free_port()), "--max-retries", "0", *key_args],
                                env=base_env(home, 1.0), stdout=out, stderr=subprocess.STDOUT)
        try:
            code = node.wait(timeout=120)
        finally:
            if node.poll() is None:
                node.kill()
    return code, log.read_text(errors="replace")


def pull_status(deployment, node_id: int, private_key: Path) -> int:
    """The HTTP status the SuperLink answers to a pull of ``node_id``'s messages signed with
    ``private_key`` (Flower's own Fleet client and request signing)."""
    from flwr.proto.fleet_pb2 import PullMessagesRequest
    from flwr.proto.node_pb2 import Node
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    key = load_ssh_private_key(private_key.read_bytes(), password=None)
    client = FleetHttpClient.from_server_address(deployment.info["address"], False, deployment.info["root_certificates"],
                                                 interceptors=[NodeAuthHttpInterceptor(key, key.public_key())])
    with client:
        try:
            client.PullMessages(PullMessagesRequest(node=Node(node_id=node_id)))
        except httpx.HTTPStatusError as refused:
            return refused.response.status_code
    return httpx.codes.OK


@pytest.mark.slow
def test_ctrl_c_stops_the_whole_deployment(deployment):
    """Ctrl-C stops everything `deploy local` started, children included, in bounded time."""
    code, took, alive = deployment.stop()
    assert code == 0 and took < 60 and not alive, alive


@pytest.mark.slow
def test_a_dead_executor_fails_its_cell_in_seconds_naming_the_client(deployment, tmp_path):
    """An executor killed mid-task: its node stops hearing the task's heartbeat and answers for
    it within TASK_TTL_S (Flower alone: 60 s); the cell fails naming the client, the supervisor
    starts a new executor, and the ServerApp that ended is reaped (no zombie)."""
    busy = SPLIT.replace("local_steps = 4", "local_steps = 150")  # a task of seconds, to be killed in
    suite = write_suite(tmp_path / "busy.toml", busy, **SPLIT_MATRIX, rounds="2")
    out = tmp_path / "out"
    runner = subprocess.Popen([sys.executable, "-m", "fedfuse.bench.cli", "run", str(suite), "--out", str(out),
                               *deployment.run_args()], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(p.stat().st_size for p in out.glob("runs/*/rounds.jsonl")), 300)
    executor = psutil.Process(deployment.info["pids"]["executor1"])
    spent = executor.cpu_times().user
    wait_for(lambda: executor.cpu_times().user > spent + 0.3, 60, every=0.05)  # it is training round 2
    executor.kill()
    killed = time.time()
    _, stderr = runner.communicate(timeout=300)
    (failed,) = CLI(tmp_path).results(out)
    assert runner.returncode == 1 and failed["status"] == "failed", stderr[-3000:]
    assert "client 1" in failed["error"] and "stopped responding" in failed["error"], failed["error"]
    # From the kill to the cell's recorded failure (the CLI's own exit left out): TASK_TTL_S (10 s)
    # to notice, then the ServerApp hears the error reply and fails the cell (to the CLI's exit: 33 s
    # seen beside a background suite, 45 s on a loaded CI machine). Flower alone gives a task 60 s
    # after its last beat, and the executor beats every 2 s: it could not notice before 58 s.
    took = failed["ended"] - killed
    assert took < 50, took
    wait_for(lambda: deployment.info["pids"]["executor1"] != executor.pid, 30)
    time.sleep(2)
    assert not [p for p in deployment.family() if p.status() == psutil.STATUS_ZOMBIE]


def wait_for(condition, timeout: float, every: float = 0.5) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(every)


def test_an_unreachable_superlink_is_an_input_error(cli, tmp_path):
    suite = write_suite(tmp_path / "suite.toml", '[[protocols]]\nname = "fedavg"\n')
    done = cli("run", str(suite), "--out", str(tmp_path / "out"), "--backend", "deployment",
               "--superlink", "127.0.0.1:9", "--insecure", timeout=120)
    assert done.returncode == 2 and "cannot use the SuperLink at 127.0.0.1:9" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing written before the connection is made


@pytest.mark.slow
def test_a_ca_the_superlink_does_not_trust_is_named(deployment, tmp_path):
    """A CA that did not sign the SuperLink's certificate: Flower says only that it cannot
    connect; fedfuse names the CA file and the host the certificate must name."""
    from fedfuse.deploy.tls import make_certificates

    other = make_certificates(tmp_path / "other-ca", ["127.0.0.1"])["ca.pem"]
    suite = write_suite(tmp_path / "suite.toml", '[[protocols]]\nname = "fedavg"\n')
    done = CLI(tmp_path)("run", str(suite), "--out", str(tmp_path / "out"), "--backend", "deployment",
                         "--superlink", deployment.info["address"], "--root-certificates", str(other), timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"check that {other} is the CA that signed its certificate" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


#: a -gpu-quick tier shrunk to a tiny cell a CPU runs in about a minute (scripts/gpu_quick.sh's SET)
TINY_GPU_QUICK = " ".join(["clients=2", "rounds=1", "samples=16", "sample_steps=2"] + [
    f"{p}.{k}" for p in ("local-only", "split-diffusion")
    for k in ("model=tiny", "client_model=tiny", "local_steps=2", "batch_size=8")])


def gpu_script(script: str, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """A GPU script on the CPU with Ray hidden (a `ray` package that refuses to import, first on
    the path of every process), its tier shrunk to a tiny cell."""
    hidden = tmp_path / "no-ray" / "ray"
    hidden.mkdir(parents=True, exist_ok=True)
    (hidden / "__init__.py").write_text('raise ImportError("Ray is hidden: a machine without Ray")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden.parent), os.environ.get("PYTHONPATH", "")]),
           "SET": TINY_GPU_QUICK, "ARGS": "--accelerator cpu --gpus-per-client 0", **env}
    probe = subprocess.run([sys.executable, "-c", "import ray"], env=env, capture_output=True, text=True)
    assert "Ray is hidden" in probe.stderr  # the hiding works
    done = subprocess.run(["bash", script], env=env, cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=900)
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    return done


def timings(out: Path) -> list[list[str]]:
    return [line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()]


@pytest.mark.long
def test_a_gpu_session_runs_its_tiers_where_ray_is_absent_and_resumes_a_cut_off_suite(cli, tmp_path):
    """scripts/gpu_session.sh (which runs scripts/gpu_quick.sh's tiers) on the CPU: the
    deployment engine runs the quick tier's cells, the throughput step and the suite's resume
    follow, and the summary gives each cell's images per second. A second session on another
    card resumes the first one's store: its cut-off tier (QUICK_LIMIT=1) says 124, and the
    suite finds every cell done."""
    tier = "seed-split-diffusion-gpu-quick"
    session = {"TIERS": tier, "SUITE": tier, "THROUGHPUT": "--accelerator cpu --side 8 --preset tiny --steps 2",
               "COMPILE_PRESET": "tiny", "COMPILERS": "aot_eager"}
    first = gpu_script("scripts/gpu_session.sh", {**session, "OUT": str(tmp_path / "out"), "QUICK_LIMIT": "900",
                                                  "LIMIT": "1500"}, tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert [(t, rc) for t, rc, *_ in timings(tmp_path / "out")] == [(tier, "0"), (tier, "0")]
    assert all(int(ready) >= 0 and int(run) > 0 and util == "-" for _, _, ready, run, util in timings(tmp_path / "out"))
    records = cli.results(tmp_path / "out" / tier)
    assert sorted(r["label"] for r in records) == ["c0.0 (local-only)", "c0.6"]
    assert all(r["status"] == "ok" and r["metrics"]["fid"] > 0 and r["metrics"]["backend"] == "deployment"
               for r in records), [r.get("error") for r in records]
    steps = [json.loads(line) for line in (tmp_path / "out" / "step_times.jsonl").read_text().splitlines()]
    assert [s["preset"] for s in steps] == ["tiny"] * 3 and all(s["s_per_step"] > 0 for s in steps)
    assert [s.get("compile") for s in steps] == [None, None, "aot_eager"]
    throughput = [line.split("\t") for line in (tmp_path / "out" / "summary.tsv").read_text().splitlines()
                  if line.startswith(tier + "\t") and "\tok\t" in line]
    assert len(throughput) == 2 and all(float(cells[7]) > 0 and float(cells[9]) > 0 for cells in throughput)

    again = {**session, "OUT": str(tmp_path / "again"), "STORE": str(tmp_path / "out" / tier), "QUICK_LIMIT": "1"}
    second = gpu_script("scripts/gpu_session.sh", again, tmp_path)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert [(t, rc) for t, rc, *_ in timings(tmp_path / "again")] == [(tier, "124"), (tier, "0")]
    resumed = cli.results(tmp_path / "again" / tier)
    assert {(r["cell"], r["ended"]) for r in resumed} == {(r["cell"], r["ended"]) for r in records}  # nothing ran again
