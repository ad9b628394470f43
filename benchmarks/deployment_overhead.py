"""Flower's deployment engine vs its simulation engine, per built-in protocol.

Starts a local deployment (a SuperLink and 2 authenticated SuperNodes over TLS, each with its
warm executor, as `fedfuse deploy local` starts them), runs the shipped suite
``deploy-overhead`` on it and in simulation, and prints a Markdown table: the real wall time
of the server's round trips (``exchange_s``) in each engine, and the deployment's overhead per
round trip. Also checks that both engines computed the same thing (payload, FLOPs, model).

    python benchmarks/deployment_overhead.py OUT [--task-poll 0.05]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fedfuse.deploy.local import LocalDeployment


def fedfuse(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fedfuse.bench.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"fedfuse {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def results(out: Path) -> dict:
    return {r["label"]: r for r in json.loads(fedfuse("results", "--out", str(out), "--format", "json"))}


def after_first(record: dict) -> list[float]:
    """Each round's exchange time after the first round (which also pays the cold start)."""
    return [r["exchange_s"] for r in record["rounds"][1:]]


def table(sim: dict, dep: dict) -> str:
    rows = ["| protocol | round trips | simulation s | deployment s | overhead per round trip s | "
            "rounds after the first, deployment s | same rounds, simulation s | same payload, FLOPs, model |",
            "|---|---|---|---|---|---|---|---|"]
    for label, s_record in sim.items():
        s, d = s_record["metrics"], dep[label]["metrics"]
        same = all(s[k] == d[k] for k in ("payload_up", "payload_down", "client_flops", "model_sha256"))
        overhead = (d["exchange_s"] - s["exchange_s"]) / d["exchanges"]
        rows.append(f"| {label} | {d['exchanges']} | {s['exchange_s']:.1f} | {d['exchange_s']:.1f} | {overhead:.2f} | "
                    f"{', '.join(f'{x:.2f}' for x in after_first(dep[label]))} | "
                    f"{', '.join(f'{x:.2f}' for x in after_first(s_record))} | {'yes' if same else 'NO'} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--task-poll", type=float, default=0.05, help="FLWR_SUPEREXEC_TASK_POLL_INTERVAL (Flower: 1.0)")
    args = parser.parse_args()
    deployment = LocalDeployment(args.out / "deploy", nodes=2, tls=True, task_poll_s=args.task_poll)
    deployment.start()
    try:
        fedfuse("run", "deploy-overhead", "--out", str(args.out / "deployment"), "--backend", "deployment",
                "--superlink", deployment.address, "--root-certificates", str(deployment.certs["ca.pem"]))
    finally:
        deployment.stop()
    fedfuse("run", "deploy-overhead", "--out", str(args.out / "simulation"))
    print(table(results(args.out / "simulation"), results(args.out / "deployment")))


if __name__ == "__main__":
    main()
