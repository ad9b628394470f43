"""No orphans: the processes a command starts end with it, even when it is killed outright.

Ray's raylet starts its dashboard and runtime-env agents, and ``deploy local`` starts Flower's
SuperLink, SuperNodes and executors in sessions of their own; when the command is killed with
SIGKILL nothing tells them, and they run on. So a command that starts processes first marks its
environment with a random token, which every process it starts (and theirs) inherits, and
starts this reaper beside it. The reaper waits on a pipe only the command holds: when the
command ends, however it ends, the kernel closes the pipe, and the reaper ends every process
that carries the token. Only those: a process fedfuse did not start never carries it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time

TOKEN_ENV = "FEDFUSE_PROCESS_TOKEN"
GRACE_S = 3.0  # between SIGTERM and SIGKILL

_started: dict = {}  # in the command's process: the reaper's pid and the pipe's write end


def reap_on_exit() -> None:
    """Call in the command's process before it starts any other; once is enough."""
    if _started:
        return
    token = secrets.token_hex(8)
    read_end, write_end = os.pipe()  # neither end is inherited by the processes started later
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}  # the reaper must not reap itself
    reaper = subprocess.Popen([sys.executable, "-m", "fedfuse.bench.cli.reaper", token, str(read_end)],
                              pass_fds=(read_end,), env=env, start_new_session=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(read_end)
    os.environ[TOKEN_ENV] = token
    _started.update(pid=reaper.pid, write_end=write_end, popen=reaper)  # the write end stays open


def reaper_pid() -> int | None:
    """The reaper's process id (a command ending its children itself leaves the reaper alone)."""
    return _started.get("pid")


def carriers(token: str) -> list:
    """This user's processes whose environment holds ``token``, the reaper excepted."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != os.getpid() and proc.environ().get(TOKEN_ENV) == token:
                found.append(proc)
    return found


def end_all(procs: list) -> None:
    """SIGTERM, then SIGKILL whatever is still there GRACE_S later."""
    import psutil

    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def reap(token: str, read_end: int) -> None:
    """Wait for the command to end, then end what it started (a few passes: a process being
    ended may still start another)."""
    while os.read(read_end, 1):  # b"" once every write end is closed: the command has ended
        pass
    for _ in range(5):
        procs = carriers(token)
        if not procs:
            return
        end_all(procs)
        time.sleep(0.2)


if __name__ == "__main__":
    reap(sys.argv[1], int(sys.argv[2]))
