"""Time- and energy-to-quality (the MLPerf time-to-train idea, for generative federated
training): the first round whose ``target_fid`` (``ServerRun.target_check``) meets the suite's
target, and what the protocol had spent until then, summed over the round records."""

from __future__ import annotations

SPENT = {"energy_to_target_j": "energy_j", "latency_to_target_s": "latency_s"}
# every figure of the target, the harness's alone (a server loop's final figures do not replace them)
FIGURES = ("target_fid", "target_reached", "rounds_to_target", "bytes_to_target", *SPENT)


def to_target(rounds: list[dict], target: dict) -> dict:
    """``target_reached`` (0/1) and, when reached, ``rounds_to_target`` and the energy,
    simulated latency and bytes (up + down) of rounds 1..that round."""
    goal = target.get("fid")
    if goal is None:
        return {}
    training = [r for r in rounds if r.get("phase") != "sampling"]
    hit = next((i for i, r in enumerate(training) if r.get("target_fid", float("inf")) <= goal), None)
    if hit is None:
        return {"target_reached": 0.0}
    spent = training[: hit + 1]
    out = {"target_reached": 1.0, "rounds_to_target": float(training[hit]["round"]),
           "bytes_to_target": float(sum(r.get("bytes_up", 0) + r.get("bytes_down", 0) for r in spent))}
    return {**out, **{name: float(sum(r.get(key, 0.0) for r in spent)) for name, key in SPENT.items()}}
