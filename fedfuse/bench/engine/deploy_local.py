"""``fedfuse deploy local``: a SuperLink and N SuperNodes on this machine, supervised.

Each process gets its own log file and Flower home under the output directory. A SuperNode
that exits is restarted (a new node, the same partition); the SuperLink exiting stops
everything. Ctrl-C (or SIGTERM) stops every process started here, children included.
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

from fedfuse.bench.engine.deployment import flower_command, flower_env
from fedfuse.bench.engine.flower import CLIENT_THREADS_ENV

READY_TIMEOUT_S = 60


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

    def start(self) -> None:
        self.starts += 1
        with self.log.open("a") as out:
            out.write(f"\n--- fedfuse: start #{self.starts}: {' '.join(self.argv)}\n")
            out.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
    processes: list[Managed] = field(default_factory=list)

    def __post_init__(self):
        self.out = Path(self.out).resolve()
        self.port = self.port or free_port(self.host)
        self.certs = self.make_certs() if self.tls else None

    @property
    def address(self) -> str:
        """Where this machine dials the SuperLink (loopback when it listens on all interfaces)."""
        return f"{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    def make_certs(self) -> dict[str, Path]:
        from fedfuse.bench.engine.tls import make_certificates

        names = [self.address.rsplit(":", 1)[0], "127.0.0.1", "localhost", *self.advertise]
        return make_certificates(self.out / "certs", list(dict.fromkeys(names)))

    def trust_args(self, for_server: bool) -> list[str]:
        if self.certs is None:
            return ["--insecure"]
        if for_server:
            return ["--ssl-certfile", str(self.certs["server.pem"]), "--ssl-keyfile", str(self.certs["server.key"]),
                    "--ssl-ca-certfile", str(self.certs["ca.pem"])]
        return ["--root-certificates", str(self.certs["ca.pem"])]

    def superlink(self) -> Managed:
        argv = [flower_command("flower-superlink"), *self.trust_args(True), "--host", self.host,
                "--port", str(self.port), "--disable-runtime-dependency-installation",
                "--database", str(self.out / "superlink.db")]
        return Managed("superlink", argv, base_env(self.out / "home-superlink", self.task_poll_s), self.out / "superlink.log")

    def supernode(self, partition: int) -> Managed:
        argv = [flower_command("flower-supernode"), *self.trust_args(False), "--superlink", self.address,
                "--port", str(free_port()), "--node-config", f"partition-id={partition} num-partitions={self.nodes}"]
        # One core per client, as the simulation engine gives each ClientApp (and N nodes share this machine).
        env = {**base_env(self.out / f"home-node{partition}", self.task_poll_s), CLIENT_THREADS_ENV: "1"}
        return Managed(f"supernode{partition}", argv, env, self.out / f"supernode{partition}.log")

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        link = self.superlink()
        self.processes = [link]
        link.start()
        self.wait_for_superlink(link)
        for partition in range(self.nodes):
            node = self.supernode(partition)
            self.processes.append(node)
            node.start()
        self.write_info()

    def wait_for_superlink(self, link: Managed) -> None:
        deadline = time.time() + READY_TIMEOUT_S
        while not _accepts(self.address.rsplit(":", 1)[0], self.port):
            if not link.alive() or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"the SuperLink did not start; see {link.log}:\n{_tail(link.log)}")
            time.sleep(0.2)

    def write_info(self) -> None:
        info = {"address": self.address, "tls": self.tls, "nodes": self.nodes,
                "root_certificates": str(self.certs["ca.pem"]) if self.certs else None,
                "pids": {p.name: p.proc.pid for p in self.processes}}
        (self.out / "deploy.json").write_text(json.dumps(info, indent=1))

    def supervise(self, stop_requested) -> int:
        """Restart SuperNodes that exit; return when the SuperLink exits or a stop is requested."""
        link, *nodes = self.processes
        while not stop_requested():
            if not link.alive():
                print(f"fedfuse: the SuperLink exited (code {link.proc.returncode}); see {link.log}", file=sys.stderr)
                return 1
            for node in nodes:
                if not node.alive():
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
        return (f"SuperLink  {self.address} ({'TLS, CA ' + str(self.certs['ca.pem']) if self.certs else 'no TLS'})\n"
                f"SuperNodes {self.nodes} here" + (f" (partition-id 0..{self.nodes - 1})" if self.nodes else "")
                + f"; logs in {self.out}\n\n"
                f"Run a suite on it (from this machine):\n"
                f"  fedfuse run smoke --backend deployment --superlink {self.address} {trust}\n\n"
                f"A SuperNode on another machine (fedfuse installed there, ca.pem copied; start this\n"
                f"command with --host 0.0.0.0 --advertise <this machine's name or IP> so it can dial in):\n"
                f"  flower-supernode --superlink <this machine>:{self.port} "
                f"{'--root-certificates ca.pem' if self.certs else '--insecure'} "
                f"--node-config \"partition-id=K num-partitions=N\"\n\n"
                f"Ctrl-C stops everything.")


def _accepts(host: str, port: int) -> bool:
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
