"""Run a cell on Flower's deployment engine: submit it to a SuperLink with ``flwr run``,
then follow what the ServerApp reports (``fedfuse.deploy.flower_app``).

The runner must be on the SuperLink's machine: the SuperLink starts the ServerApp there, and
it writes its rounds and result into the cell's run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fedfuse.deploy.flower_app import (
    RESULT_FILE,
    ROUNDS_FILE,
    SERVER_FILE,
    write_app,
)
from fedfuse.bench.engine.services import RUN_CONFIG_KEY, RUN_DIR_KEY
from fedfuse.plugins.config import ConfigError

CONNECTION = "fedfuse"  # the SuperLink connection's name in the private Flower config
STATUS_EVERY_S = 10.0  # how often to ask the SuperLink whether the run is alive, unless its ServerApp is seen
SEEN_STATUS_EVERY_S = 60.0  # and while it is: a ServerApp alive but cut off from its SuperLink


def flower_command(name: str) -> str:
    """Flower's executables from this Python's environment (not whatever PATH finds first)."""
    return str(Path(sys.executable).with_name(name))


def flower_env(home: Path) -> dict:
    """The environment for Flower's commands: their state under ``home``, no telemetry, no
    look-up of newer releases."""
    return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


class DeploymentError(RuntimeError):
    """The SuperLink refused the run, or the run ended without the ServerApp's result."""


@dataclass(frozen=True)
class SuperLink:
    """Where the SuperLink's API listens, and how to trust it."""

    address: str  # host:port
    root_certificates: Path | None = None
    insecure: bool = False

    def __post_init__(self):
        if ":" not in self.address:
            raise ConfigError(f"--superlink must be HOST:PORT, got {self.address!r}")
        if self.insecure == (self.root_certificates is not None):
            raise ConfigError("give the SuperLink's CA with --root-certificates PATH, or say --insecure "
                              "for a SuperLink started without TLS (exactly one of the two)")
        if self.root_certificates is not None and not Path(self.root_certificates).is_file():
            raise ConfigError(f"--root-certificates: no file {self.root_certificates}")

    def flower_config(self) -> str:
        """Flower's CLI configuration (its ``config.toml``) naming this SuperLink."""
        trust = ("insecure = true" if self.insecure
                 else f"root-certificates = {json.dumps(str(Path(self.root_certificates).resolve()))}")
        return f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n' \
               f'address = {json.dumps(self.address)}\n{trust}\n'


class DeploymentEngine:
    """Submits cells to one SuperLink. Flower's CLI state lives under ``out_dir/flower``."""

    def __init__(self, superlink: SuperLink, out_dir: Path, poll_s: float = 0.2):
        self.superlink, self.poll_s = superlink, poll_s
        self.home = Path(out_dir).resolve() / "flower"
        self.app = self.home / "app"

    def prepare(self) -> None:
        """Flower's CLI state and the app it submits, under the output folder."""
        write_app(self.app)
        (self.home / "config.toml").write_text(self.superlink.flower_config())

    def flwr_json(self, *args: str, timeout: float = 120, home: Path | None = None) -> dict:
        """A ``flwr`` CLI command with ``--format json``; its answer, or an error if it failed
        (the CLI can exit 0 with ``"success": false``, e.g. when the SuperLink is unreachable)."""
        answer = json.loads(self.flwr(*args, "--format", "json", timeout=timeout, home=home))
        if not answer.get("success", False):
            raise DeploymentError(f"flwr {args[0]} failed: {answer.get('error-message', answer)}")
        return answer

    def flwr(self, *args: str, timeout: float = 120, home: Path | None = None) -> str:
        """A ``flwr`` CLI command against this SuperLink; its stdout."""
        done = subprocess.run([flower_command("flwr"), *args], capture_output=True, text=True,
                              env=flower_env(home or self.home), timeout=timeout)
        if done.returncode != 0:
            raise DeploymentError(f"flwr {args[0]} failed: {(done.stderr or done.stdout).strip()[-800:]}")
        return done.stdout

    def check(self) -> None:
        """Fail early, before any cell and before anything is written to the output folder, when
        the SuperLink cannot be reached or trusted (asked from a temporary Flower home); then
        ``prepare``."""
        with tempfile.TemporaryDirectory(prefix="fedfuse-flower-") as home:
            (Path(home) / "config.toml").write_text(self.superlink.flower_config())
            try:
                self.flwr_json("ls", CONNECTION, timeout=60, home=Path(home))
            except (DeploymentError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
                raise ConfigError(f"cannot use the SuperLink at {self.superlink.address}: {err}{self.trust_hint()}") from None
        self.prepare()

    def trust_hint(self) -> str:
        """Flower reports a certificate it does not trust as an unreachable SuperLink: name the CA."""
        if self.superlink.root_certificates is None:
            return ""
        host = self.superlink.address.rsplit(":", 1)[0]
        return (f"; if the SuperLink is up, check that {self.superlink.root_certificates} is the CA that signed its "
                f"certificate and that the certificate names {host}")

    def run_cell(self, run) -> dict:
        """Submit ``run``'s cell, relay its rounds to ``run``; the ServerApp's final metrics."""
        for name in (ROUNDS_FILE, RESULT_FILE, SERVER_FILE):
            (run.run_dir / name).unlink(missing_ok=True)
        run_config = run.run_dir / "flower_run_config.toml"
        run_config.write_text(f"{json.dumps(RUN_CONFIG_KEY)} = {json.dumps(run.cell.to_json())}\n"
                              f"{json.dumps(RUN_DIR_KEY)} = {json.dumps(str(run.run_dir.resolve()))}\n")
        submitted = self.flwr_json("run", str(self.app), CONNECTION, "--run-config", str(run_config))
        run_id = submitted["run-id"]
        (run.run_dir / "flower_run_id").write_text(run_id)
        try:
            outcome = self.follow(run, run_id)
        except KeyboardInterrupt:
            self.flwr("stop", run_id, CONNECTION)
            raise
        if outcome["status"] != "ok":
            (run.run_dir / "server_traceback.txt").write_text(outcome.get("traceback", ""))
            raise DeploymentError(outcome["error"])
        return {**outcome["metrics"], **self.flower_figures(run_id)}

    def follow(self, run, run_id: str) -> dict:
        """Relay the ServerApp's round lines to ``run`` until its result appears."""
        rounds, result = ReportReader(run.run_dir / ROUNDS_FILE), run.run_dir / RESULT_FILE
        last_check = time.time()
        while True:
            done = result.exists()  # written after the last round line: read those first
            for line in rounds.new_lines():
                relay(run, line)
            if done:
                return json.loads(result.read_text())
            every = SEEN_STATUS_EVERY_S if server_running(run.run_dir / SERVER_FILE) else STATUS_EVERY_S
            if time.time() > last_check + every:
                self.check_alive(run_id, result)
                last_check = time.time()
            time.sleep(self.poll_s)

    def status(self, run_id: str) -> dict:
        return self.flwr_json("ls", CONNECTION, "--run-id", run_id)["runs"][0]

    def check_alive(self, run_id: str, result: Path) -> None:
        """A run that Flower reports finished must have left its result (ServerApp killed, or it
        could not start: the reason is in Flower's status details)."""
        status = self.status(run_id)
        if status["status"].startswith("finished") and not result.exists():
            time.sleep(1.0)  # the result file is written just before the ServerApp exits
            if not result.exists():
                raise DeploymentError(f"Flower run {run_id} ended ({status['status']}: {status['status-details']}) "
                                      "without a result from the ServerApp; see `flwr log` for it")

    def flower_figures(self, run_id: str) -> dict:
        """Flower's own count of the run's traffic, kept beside fedfuse's as a cross-check."""
        traffic = self.status(run_id).get("network-traffic", {})
        return {"flower_inbound_bytes": traffic.get("inbound-bytes", 0),
                "flower_outbound_bytes": traffic.get("outbound-bytes", 0)}


def server_running(record: Path) -> bool:
    """Whether the ServerApp process that wrote ``record`` is alive on this machine: a local
    check, where asking Flower costs a ``flwr`` process. False where it cannot be seen (not
    started yet, ended, a zombie its launcher has not reaped, or in another process
    namespace): then Flower is asked."""
    import psutil

    try:
        server = json.loads(record.read_text())
        process = psutil.Process(server["pid"])
        same = abs(process.create_time() - server["started"]) < 0.5  # (not a later process with its pid)
        return same and process.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except (OSError, ValueError, KeyError, psutil.Error):
        return False


class ReportReader:
    """The complete lines appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new_lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def relay(run, line: dict) -> None:
    if "round" in line:
        run.rounds.append(line["round"])
        run.on_round(line["round"])
    elif "status" in line:
        run.on_status(line["status"])
