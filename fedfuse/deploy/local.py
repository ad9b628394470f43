"""``fedfuse deploy local``: a SuperLink and N SuperNodes on this machine, supervised.

Each process gets its own log file and Flower home under the output directory. Each SuperNode
runs its ClientApps in a warm executor beside it (``fedfuse worker``, deploy/executor.py), with
Flower's waits capped (flower_patches.py). A SuperNode or executor that exits is restarted (the
same partition); the SuperLink exiting stops everything. Ctrl-C (or SIGTERM) stops every process
started here, children included.

With TLS, the SuperNodes are also authenticated (Flower's CLI-managed node authentication):
the SuperLink runs with ``--enable-supernode-auth``, each SuperNode gets a key pair of its own,
and its public key is registered with ``flwr supernode register`` before it starts. A node
whose key is not registered is refused. Flower allows node authentication only over TLS.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from flwr.supercore.error import ApiErrorCode

from fedfuse.deploy.engine import CONNECTION, SuperLink, flower_command, flower_env
from fedfuse.deploy.flower_patches import TASK_TTL_ENV, TASK_TTL_S
from fedfuse.bench.engine.flower import CLIENT_THREADS_ENV
from fedfuse.plugins.config import ConfigError

READY_TIMEOUT_S = 60
NODE_KEYS_DIR = "node-keys"
CLI_HOME_DIR = "home-cli"  # Flower's CLI config naming this SuperLink, for `flwr supernode register/ls`
# `flwr supernode register` of a key the SuperLink knows already (deploy local restarted on the
# same directory, hence the same superlink.db and keys): nothing to do.
KEY_ALREADY_REGISTERED = f"[code: {int(ApiErrorCode.PUBLIC_KEY_ALREADY_IN_USE)}]"
# The least time between two starts of one SuperNode. With node authentication, a restarted node
# keeps its key, so it is the same node, and the SuperLink refuses to activate it while it still
# counts the previous process online (until 2 missed heartbeats after a crash: about 60 s). Its
# start then fails at once; this keeps those retries from spinning.
RESTART_INTERVAL_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def base_env(home: Path, task_poll_s: float) -> dict:
    bin_dir = str(Path(sys.executable).parent)  # SuperExec finds flwr-serverapp/-clientapp on PATH
    return {**flower_env(home), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            # SuperExec polls for work every second by default; each message waits for that poll
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(task_poll_s)}


@dataclass
class Managed:
    """One supervised process: how to start it, its log, its current Popen."""

    name: str
    argv: list[str]
    env: dict
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        self.starts += 1
        self.started_at = time.time()
        with self.log.open("a") as out:
            out.write(f"\n--- fedfuse: start #{self.starts}: {' '.join(self.argv)}\n")
            out.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def due_for_restart(self) -> bool:
        return time.time() - self.started_at >= RESTART_INTERVAL_S

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM to the process and everything it started; SIGKILL what is left after ``grace_s``."""
        if self.proc is None:
            return
        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):  # it may have exited meanwhile
                p.terminate()
        _, alive = psutil.wait_procs(family, timeout=grace_s)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=grace_s)
        self.proc.poll()


@dataclass
class LocalDeployment:
    out: Path
    nodes: int
    tls: bool
    host: str = "127.0.0.1"
    port: int = 0
    advertise: list[str] = field(default_factory=list)  # extra names/IPs in the certificate
    task_poll_s: float = 0.05  # SuperExec's poll for new work (Flower's default: 1 s)
    node_poll_s: float | None = 0.05  # cap on the SuperNode's waits (flower_patches.py); None: Flower's own
    workers: bool = True  # a warm executor per SuperNode (deploy/executor.py); False: Flower's SuperExec
    processes: list[Managed] = field(default_factory=list)

    def __post_init__(self):
        self.out = Path(self.out).resolve()
        if self.port:  # before anything is written or started
            check_port_free(self.host, self.port)
        self.port = self.port or free_port(self.host)
        self.certs = self.make_certs() if self.tls else None
        self.node_keys = self.make_node_keys() if self.node_auth else {}
        self.cli_home = self.out / CLI_HOME_DIR
        self._runtime_ports: dict[int, int] = {}

    @property
    def node_auth(self) -> bool:
        """Authenticated SuperNodes: always with TLS (Flower refuses them without)."""
        return self.tls

    @property
    def address(self) -> str:
        """Where this machine dials the SuperLink (loopback when it listens on all interfaces)."""
        return f"{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    def make_certs(self) -> dict[str, Path]:
        from fedfuse.deploy.tls import make_certificates

        names = [self.address.rsplit(":", 1)[0], "127.0.0.1", "localhost", *self.advertise]
        return make_certificates(self.out / "certs", list(dict.fromkeys(names)))

    def make_node_keys(self) -> dict[int, dict[str, Path]]:
        """{partition: its SuperNode's ``key`` and ``pub`` files}; existing ones are kept."""
        from fedfuse.deploy.tls import make_node_key

        return {partition: make_node_key(self.out / NODE_KEYS_DIR, f"supernode{partition}")
                for partition in range(self.nodes)}

    def trust_args(self, for_server: bool) -> list[str]:
        if self.certs is None:
            return ["--insecure"]
        if for_server:
            return ["--ssl-certfile", str(self.certs["server.pem"]), "--ssl-keyfile", str(self.certs["server.key"]),
                    "--ssl-ca-certfile", str(self.certs["ca.pem"])]
        return ["--root-certificates", str(self.certs["ca.pem"])]

    def superlink(self) -> Managed:
        argv = [*self.patched("superlink", "flower-superlink"), *self.trust_args(True), "--host", self.host,
                "--port", str(self.port), "--disable-runtime-dependency-installation",
                "--database", str(self.out / "superlink.db")]
        if self.node_auth:
            argv.append("--enable-supernode-auth")  # only registered keys get in
        return Managed("superlink", argv, base_env(self.out / "home-superlink", self.task_poll_s), self.out / "superlink.log")

    def supernode(self, partition: int) -> Managed:
        argv = [*self.supernode_command(), *self.trust_args(False), "--superlink", self.address,
                "--port", str(self.runtime_port(partition)),
                "--node-config", f"partition-id={partition} num-partitions={self.nodes}"]
        if self.node_auth:
            argv += ["--auth-supernode-private-key", str(self.node_keys[partition]["key"])]
        if self.workers:  # the node leaves its ClientApp tasks to its warm executor
            argv += ["--isolation", "process"]
        return Managed(f"supernode{partition}", argv, self.client_env(partition), self.out / f"supernode{partition}.log")

    def supernode_command(self) -> list[str]:
        return self.patched(str(self.node_poll_s), "flower-supernode")

    def patched(self, mode: str, command: str) -> list[str]:
        """Flower's ``command`` through flower_patches.py (``mode``: superlink, or the node's cap),
        or as it is where the patches are off (``node_poll_s = None``)."""
        if self.node_poll_s is None:
            return [flower_command(command)]
        return [sys.executable, "-m", "fedfuse.deploy.flower_patches", mode]

    def runtime_port(self, partition: int) -> int:
        """The port of the SuperNode's Runtime API, where its executor asks for tasks."""
        return self._runtime_ports.setdefault(partition, free_port())

    def client_env(self, partition: int) -> dict:
        # One core per client, as the simulation engine gives each ClientApp (and N nodes share this machine).
        env = {**base_env(self.out / f"home-node{partition}", self.task_poll_s), CLIENT_THREADS_ENV: "1"}
        if self.workers:  # its executor beats every TASK_HEARTBEAT_S: a silent one is dead
            env[TASK_TTL_ENV] = str(TASK_TTL_S)
        return env

    def executor(self, partition: int) -> Managed:
        argv = [sys.executable, "-m", "fedfuse.bench.cli", "worker", "--supernode", f"127.0.0.1:{self.runtime_port(partition)}"]
        return Managed(f"executor{partition}", argv, self.client_env(partition), self.out / f"executor{partition}.log")

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        link = self.superlink()
        self.processes = [link]
        link.start()
        self.wait_for_superlink(link)
        self.write_cli_config()
        for partition in range(self.nodes):
            if self.node_auth:
                self.register(self.node_keys[partition]["pub"])
            node = self.supernode(partition)
            self.processes.append(node)
            node.start()
            if self.workers:
                self.processes.append(executor := self.executor(partition))
                executor.start()
        self.write_info()

    def wait_for_superlink(self, link: Managed) -> None:
        deadline = time.time() + READY_TIMEOUT_S
        while not accepts(self.address.rsplit(":", 1)[0], self.port):
            if not link.alive() or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"the SuperLink did not start; see {link.log}:\n{_tail(link.log)}")
            time.sleep(0.2)

    def write_cli_config(self) -> None:
        """Flower's CLI configuration with this SuperLink as connection ``fedfuse``: for the
        registrations here, and for ``FLWR_HOME=<out>/home-cli flwr supernode ...`` by hand."""
        link = SuperLink(self.address, root_certificates=self.certs["ca.pem"]) if self.certs \
            else SuperLink(self.address, insecure=True)
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(link.flower_config())

    def flwr(self, *args: str) -> subprocess.CompletedProcess:
        """A ``flwr`` CLI command against this SuperLink."""
        return subprocess.run([flower_command("flwr"), *args], capture_output=True, text=True,
                              env=flower_env(self.cli_home), timeout=120)

    def register(self, public_key: Path) -> None:
        """Let one SuperNode in: register its public key with the SuperLink (through its Control
        API, as Flower's documentation does). A key already registered is fine."""
        done = self.flwr("supernode", "register", str(public_key), CONNECTION, "--format", "json")
        try:  # the CLI exits 0 with "success": false on a refusal
            answer = json.loads(done.stdout)
        except json.JSONDecodeError:
            answer = {}
        if answer.get("success") or KEY_ALREADY_REGISTERED in answer.get("error-message", ""):
            return
        self.stop()
        raise RuntimeError(f"could not register {public_key} with the SuperLink: "
                           f"{answer.get('error-message') or (done.stderr or done.stdout).strip()[-800:]}")

    def write_info(self) -> None:
        info = {"address": self.address, "tls": self.tls, "nodes": self.nodes,
                "root_certificates": str(self.certs["ca.pem"]) if self.certs else None,
                "node_auth": self.node_auth, "flower_cli_home": str(self.cli_home),
                "node_keys": {f"supernode{p}": str(keys["key"]) for p, keys in self.node_keys.items()},
                "pids": {p.name: p.proc.pid for p in self.processes}}
        (self.out / "deploy.json").write_text(json.dumps(info, indent=1))

    def supervise(self, stop_requested) -> int:
        """Restart SuperNodes and executors that exit; return when the SuperLink exits or a stop
        is requested."""
        link, *nodes = self.processes
        while not stop_requested():
            if not link.alive():
                print(f"fedfuse: the SuperLink exited (code {link.proc.returncode}); see {link.log}", file=sys.stderr)
                return 1
            for node in nodes:
                if not node.alive() and node.due_for_restart():
                    print(f"fedfuse: {node.name} exited (code {node.proc.returncode}); restarting it", flush=True)
                    node.start()
                    self.write_info()
            time.sleep(0.5)
        return 0

    def stop(self) -> None:
        for process in reversed(self.processes):  # SuperNodes first, then the SuperLink
            process.stop()

    def instructions(self) -> str:
        trust = (f"--root-certificates {self.certs['ca.pem']}" if self.certs else "--insecure")
        security = (f"TLS, CA {self.certs['ca.pem']}; registered SuperNodes only" if self.certs
                    else "no TLS; any SuperNode may join")
        return (f"SuperLink  {self.address} ({security})\n"
                f"SuperNodes {self.nodes} here" + (f" (partition-id 0..{self.nodes - 1})" if self.nodes else "")
                + f"; logs in {self.out}\n\n"
                f"Run a suite on it (from this machine):\n"
                f"  fedfuse run smoke --backend deployment --superlink {self.address} {trust}\n\n"
                f"A SuperNode on another machine (fedfuse installed there; start this command with\n"
                f"--host 0.0.0.0 --advertise <this machine's name or IP> so it can dial in):\n"
                f"{self.remote_node_steps()}\n\n"
                f"Ctrl-C stops everything.")

    def remote_node_steps(self) -> str:
        node_args = '--node-config "partition-id=K num-partitions=N" --isolation process --port 909<4+K>'
        warm = "  there: fedfuse worker --supernode 127.0.0.1:909<4+K>   (runs its ClientApp tasks, warm)"
        if not self.certs:
            return f"  flower-supernode --superlink <this machine>:{self.port} --insecure {node_args}\n{warm}"
        return (f"  there: ssh-keygen -t ecdsa -b 384 -N '' -f nodeK.key   (nodeK.key stays there)\n"
                f"  copy ca.pem there, and nodeK.key.pub here; then\n"
                f"  here:  FLWR_HOME={self.cli_home} flwr supernode register nodeK.key.pub {CONNECTION}\n"
                f"  there: flower-supernode --superlink <this machine>:{self.port} --root-certificates ca.pem "
                f"--auth-supernode-private-key nodeK.key {node_args}\n{warm}")


def check_port_free(host: str, port: int) -> None:
    """A port another process listens on is named with its holder, where known (Flower would
    only exit with code 1 after the deployment looked ready)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no holder
        try:
            probe.bind((host, port))
            return
        except OSError as err:
            why = err.strerror
    raise ConfigError(f"port {port} on {host} cannot be used ({why}){holder_of(port)}; choose another with "
                      "--port, or --port 0 for a free one")


def holder_of(port: int) -> str:
    """`` by NAME (pid N)`` of the process listening on ``port``, where this user may see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by {psutil.Process(conn.pid).name()} (pid {conn.pid})"
    return ""


def accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def serve(deployment: LocalDeployment) -> int:
    """Start, print how to use it, supervise until Ctrl-C/SIGTERM, stop everything."""
    stopping = []
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
        signal.signal(signum, lambda *_: stopping.append(True))
    try:
        deployment.start()
        print(deployment.instructions(), flush=True)
        print("fedfuse: deployment ready", flush=True)
        return deployment.supervise(lambda: bool(stopping))
    except KeyboardInterrupt:
        return 0
    finally:
        deployment.stop()
        print("fedfuse: deployment stopped", flush=True)
