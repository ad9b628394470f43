"""Flower's hard-coded waits in a deployment, shortened, and its finished ServerApps reaped: a
stop-gap until Flower makes these settable (docs/deployment.md has the upstream proposal).

- The SuperNode sleeps 3 s whenever it asks the SuperLink for work and finds none
  (``time.sleep(3)`` in ``flwr/supernode/start_client_internal.py``), and waits for its ClientApp's
  reply in 0.5 s steps. Every round pays the 3 s: a node that has just sent its reply asks at
  once, finds nothing (the server is still aggregating) and sleeps.
- A message is offered before its arrays have all arrived, and whoever fetches them (the
  SuperNode from the SuperLink, the ServerApp its replies) retries after 1 s, 2 s, 4 s...
  (``pull_objects``' ``PULL_INITIAL_BACKOFF``), for arrays that arrive in milliseconds.

No flag, config key or environment variable sets these, so fedfuse caps them in the processes
it starts:
- ``python -m fedfuse.deploy.flower_patches SECONDS <flower-supernode arguments>`` runs the
  SuperNode with every wait of that module capped at SECONDS (and, with ``FEDFUSE_TASK_TTL_S``
  set, gives up on a silent executor's task after that many seconds: ``shorten_task_ttl``);
- ``python -m fedfuse.deploy.flower_patches superlink <flower-superlink arguments>`` runs the
  SuperLink with a SuperExec that reaps its finished ServerApp processes (``reap_children``);
- the cell's ServerApp caps its grid's retries (``shorten_grid_pulls``), and the warm executor
  its own (``shorten_task_pulls``).
A node that has found no work for ``IDLE_AFTER_S`` asks every ``IDLE_POLL_S`` instead (at
0.05 s, two idle nodes and their executors keep one of 2 cores about 60 % busy). Each patch
checks that Flower still has what it replaces; if not (another Flower), it says so and leaves
Flower as it is.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import time

TESTED_FLOWER = "1.42"  # the Flower (major.minor) these patches were written and tested against
FETCH_CAP_S = 0.05
IDLE_AFTER_S, IDLE_POLL_S = 5.0, 0.25
BUSY_GAP_S = 1.0  # between two empty polls, longer than a request takes: the node had a message
NODE_IDLE_SLEEP_S = 3  # the SuperNode loop's sleep after asking for work and finding none
log = logging.getLogger("fedfuse")


class IdleBackoff:
    """How long a poller waits before asking again: ``fast_s`` while it found work in the last
    ``IDLE_AFTER_S``, then ``IDLE_POLL_S`` (never faster than ``fast_s``). Between cells, while
    the server evaluates, and for a node that waits long on its peers or is not drawn, it stops
    spending the machine's cores (and the SuperLink's) on empty answers; the price is that the
    next message may wait up to ``IDLE_POLL_S`` for the node and as long again for its executor."""

    def __init__(self, fast_s: float):
        self.fast_s, self.last_work = fast_s, time.monotonic()

    def worked(self) -> None:
        self.last_work = time.monotonic()

    def wait_s(self) -> float:
        idle = time.monotonic() - self.last_work >= IDLE_AFTER_S
        return max(self.fast_s, IDLE_POLL_S) if idle else self.fast_s


class CappedSleep:
    """The ``time`` module as one Flower module sees it, with every sleep capped; its empty-poll
    sleep follows an ``IdleBackoff``. Any other sleep (for a reply, for arrays), or a pause
    between two empty polls longer than a request takes, means the node had work."""

    def __init__(self, cap_s: float):
        self.cap_s, self.backoff, self.last_poll_end = cap_s, IdleBackoff(cap_s), time.monotonic()

    def sleep(self, seconds: float) -> None:
        empty_poll = seconds == NODE_IDLE_SLEEP_S
        if not empty_poll or time.monotonic() - self.last_poll_end > BUSY_GAP_S:
            self.backoff.worked()
        time.sleep(min(seconds, self.backoff.wait_s() if empty_poll else self.cap_s))
        if empty_poll:
            self.last_poll_end = time.monotonic()

    def __getattr__(self, name):
        return getattr(time, name)


FETCHES = ("pull_objects", "pull_and_inflate_object_from_tree")  # Flower's array fetches, with retries
RETRY_ARGS = {"initial_backoff", "backoff_cap", "max_tries_per_object"}


def version_guard() -> bool:
    """True on the Flower these patches were tested against; on another, a warning (once): each
    patch still checks that what it replaces is there, and leaves Flower as it is if not."""
    import flwr

    tested = ".".join(flwr.__version__.split(".")[:2]) == TESTED_FLOWER
    if not tested and not getattr(version_guard, "warned", False):
        version_guard.warned = True
        log.warning("fedfuse: Flower %s: its waits are capped as on Flower %s, where this was tested",
                    flwr.__version__, TESTED_FLOWER)
    return tested


def quick_fetches(module, cap_s: float) -> bool:
    """``module``'s array fetches retrying within ``cap_s`` instead of from 1 s up. The wait stays
    bounded by Flower's time limit, not by its 500 tries per object (500 x 0.05 s would give up
    on a slow link after 25 s). False (nothing changed) if a fetch no longer takes these arguments."""
    version_guard()
    fetches = [name for name in FETCHES if hasattr(module, name)]
    if not fetches or any(not RETRY_ARGS <= set(inspect.signature(getattr(module, n)).parameters) for n in fetches):
        return False
    for name in fetches:
        setattr(module, name, functools.partial(getattr(module, name), initial_backoff=cap_s / 5,
                                                backoff_cap=cap_s, max_tries_per_object=None))
    return True


def shorten_supernode_waits(cap_s: float) -> bool:
    """Cap the SuperNode's idle poll, reply wait and array fetch retries at ``cap_s``; False
    (nothing changed) on a Flower whose loop no longer has the hard-coded poll."""
    from flwr.supernode import start_client_internal as loop

    if f"time.sleep({NODE_IDLE_SLEEP_S})" not in inspect.getsource(loop.start_client_internal) or not quick_fetches(loop, cap_s):
        return False
    loop.time = CappedSleep(cap_s)
    return True


def shorten_grid_pulls(cap_s: float = FETCH_CAP_S) -> bool:
    """In a ServerApp process: fetch replies' arrays retrying within ``cap_s``."""
    from flwr.superlink.grid import http_grid

    return quick_fetches(http_grid, cap_s)


def shorten_task_pulls(cap_s: float = FETCH_CAP_S) -> bool:
    """In a process that runs ClientApp tasks (the warm executor): fetch messages' arrays
    retrying within ``cap_s``."""
    from flwr.supernode.runtime import run_clientapp

    return quick_fetches(run_clientapp, cap_s)


def warn_unless(shortened: bool, where: str) -> None:
    if not shortened:
        log.warning("fedfuse: this Flower's %s fetches arrays differently; its waits are left as they are", where)


TASK_TTL_ENV = "FEDFUSE_TASK_TTL_S"  # set by `deploy local` on nodes served by fedfuse's executor
TASK_HEARTBEAT_S, TASK_TTL_S = 2.0, 10.0  # the executor's beat; how long a node waits for a missed one


def shorten_task_ttl(ttl_s: float) -> bool:
    """The SuperNode gives up on a ClientApp task whose executor has gone silent after ``ttl_s``
    instead of Flower's 60 s (two missed beats of 30 s), and answers in its place with Flower's
    "ClientApp crashed" error: the cell fails naming the client. Only for a node whose tasks run
    in fedfuse's executor, which beats every ``TASK_HEARTBEAT_S``; Flower's own
    flwr-clientapp beats every 20 s or so and would be cut off."""
    from flwr.supercore.corestate import in_memory_corestate as state

    if not all(hasattr(state, name) for name in ("HEARTBEAT_DEFAULT_INTERVAL", "HEARTBEAT_PATIENCE")):
        return False
    state.HEARTBEAT_DEFAULT_INTERVAL, state.HEARTBEAT_PATIENCE = ttl_s / 2, 2  # a claim waits ttl/2 for its start
    return True


def reaped_superexec() -> bool:
    """The SuperLink starts its SuperExec through this module (``superexec``), which reaps the
    ServerApp processes it starts; False (nothing changed) if Flower builds the command elsewhere."""
    import importlib

    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")
    build = getattr(cli, "_get_superexec_command", None)
    if build is None:
        return False

    def command(*args, **kwargs) -> list[str]:
        argv = build(*args, **kwargs)
        return [sys.executable, "-m", "fedfuse.deploy.flower_patches", "superexec", *argv[1:]] if argv[0] == "flower-superexec" else argv

    cli._get_superexec_command = command
    return True


def reap_children(every_s: float = 0.5) -> None:
    """Flower's SuperExec starts each ServerApp with Popen and drops it; Python reaps a dropped
    process only when the next one starts, so the last ServerApp stays a zombie until then (a
    failed cell's, until the deployment stops). A thread reaps every exited child instead."""
    import os
    import threading

    import psutil

    def reap() -> None:
        while True:
            for child in psutil.Process().children():
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    if child.status() == psutil.STATUS_ZOMBIE:
                        os.waitpid(child.pid, os.WNOHANG)
            time.sleep(every_s)

    threading.Thread(target=reap, name="fedfuse-reaper", daemon=True).start()


def run_superlink(argv: list[str]) -> None:
    if not reaped_superexec():
        print("fedfuse: this Flower's SuperLink builds its SuperExec command elsewhere; running it unchanged",
              file=sys.stderr)
    from flwr.superlink.cli import flower_superlink

    sys.argv = ["flower-superlink", *argv]
    flower_superlink()


def run_superexec(argv: list[str]) -> None:
    reap_children()
    from flwr.supercore.cli import flower_superexec

    sys.argv = ["flower-superexec", *argv]
    flower_superexec()


def run_supernode(cap_s: float, argv: list[str]) -> None:
    if not shorten_supernode_waits(cap_s):
        print("fedfuse: this Flower's SuperNode has no hard-coded 3 s poll; running it unchanged", file=sys.stderr)
    if os.environ.get(TASK_TTL_ENV) and not shorten_task_ttl(float(os.environ[TASK_TTL_ENV])):
        print("fedfuse: this Flower's SuperNode times its tasks otherwise; a silent executor is given Flower's time",
              file=sys.stderr)
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
    elif argv[0] == "superlink":
        run_superlink(argv[1:])
    elif argv[0] == "superexec":
        run_superexec(argv[1:])
    else:
        run_supernode(float(argv[0]), argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
