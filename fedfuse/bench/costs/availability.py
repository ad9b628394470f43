"""Who is online in each round: a profile's availability model (in the spirit of FedScale's
availability traces, counted in rounds rather than on a virtual clock).

A suite's ``[[profiles]]`` entry may say ``availability = ...``:

* nothing (default): every client is online in every round;
* ``{ p_off = 0.1, p_on = 0.3 }``: each client is an on/off Markov chain over rounds, going
  offline with probability ``p_off`` after a round online and coming back with probability
  ``p_on`` after a round offline; round 1 is drawn from the chain's stationary distribution
  (online with probability p_on / (p_on + p_off)); the draws come from the cell's seed;
* ``{ trace = "online.csv" }``: a CSV file (relative to the suite) of online intervals, one per
  line ``client,first_round,last_round`` (inclusive; a header line is allowed); a client with no
  line is always online. The file's intervals are copied into the cell, so a cell is
  self-contained and a changed file makes new cells.

Only online clients can be drawn for a round (``ServerRun.begin_round``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SALT = 0xA7A1


def checked(spec: dict, suite_dir: Path) -> dict:
    """The profile's ``availability`` checked, a trace file read into ``intervals``."""
    if set(spec) == {"p_off", "p_on"}:
        if not all(isinstance(spec[k], (int, float)) and 0 <= spec[k] <= 1 for k in spec) or spec["p_on"] == 0:
            raise ValueError(f"availability: p_off must be in [0, 1] and p_on in (0, 1], got {spec}")
        return {"p_off": float(spec["p_off"]), "p_on": float(spec["p_on"])}
    if set(spec) == {"trace"} and isinstance(spec["trace"], str):
        return {"intervals": read_trace(suite_dir / spec["trace"])}
    raise ValueError(f"availability must be {{ p_off = .., p_on = .. }} or {{ trace = \"file.csv\" }}, got {spec}")


def read_trace(path: Path) -> list[list[int]]:
    """[[client, first_round, last_round], ...] from a CSV of online intervals."""
    if not path.is_file():
        raise ValueError(f"availability trace '{path}' does not exist")
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and not r[0].strip().startswith("#")]
    if rows and not rows[0][0].strip().isdigit():
        rows = rows[1:]  # a header line
    try:
        intervals = [[int(c), int(a), int(b)] for c, a, b in rows]
    except ValueError:
        raise ValueError(f"availability trace '{path}': every line must be client,first_round,last_round") from None
    if any(c < 0 or a < 1 or b < a for c, a, b in intervals):
        raise ValueError(f"availability trace '{path}': clients >= 0 and 1 <= first_round <= last_round")
    return intervals


def online(spec: dict, clients: int, rounds: int, seed: int) -> np.ndarray:
    """(rounds, clients) booleans: who is online in each round (row r - 1 for round r)."""
    if "intervals" in spec:
        return traced(spec["intervals"], clients, rounds)
    if "p_off" in spec:
        return markov(spec["p_off"], spec["p_on"], clients, rounds, np.random.default_rng([seed, SALT]))
    return np.ones((rounds, clients), bool)


def traced(intervals: list, clients: int, rounds: int) -> np.ndarray:
    listed = {c for c, _, _ in intervals}
    state = np.zeros((rounds, clients), bool)
    state[:, [c for c in range(clients) if c not in listed]] = True
    for c, first, last in intervals:
        if c < clients:
            state[first - 1:min(last, rounds), c] = True
    return state


def markov(p_off: float, p_on: float, clients: int, rounds: int, rng: np.random.Generator) -> np.ndarray:
    state = np.empty((rounds, clients), bool)
    state[0] = rng.random(clients) < p_on / (p_on + p_off)
    for r in range(1, rounds):
        u = rng.random(clients)
        state[r] = np.where(state[r - 1], u >= p_off, u < p_on)
    return state
