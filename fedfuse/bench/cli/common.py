"""What the commands share: the console, and how a run stops on Ctrl-C or SIGTERM. (One module
that every command imports, so that the exception raised on SIGTERM is one class whether the
CLI runs as ``fedfuse`` or as ``python -m fedfuse.bench.cli``.)"""

from __future__ import annotations

import contextlib
import os
import sys

from rich.console import Console


def console() -> Console:
    """Rich draws 80 columns when output is not a terminal; tables need a little more."""
    import shutil

    return Console(width=max(shutil.get_terminal_size((120, 24)).columns, 120))


class Terminated(BaseException):
    """SIGTERM (a scheduler, ``timeout``), handled as Ctrl-C is."""


#: seconds an interrupted run may take to unwind before it is ended from another thread
UNWIND_S = 10.0


def stop_on_signals(settle) -> None:
    """SIGINT and SIGTERM raise in the main thread, so the running cell is marked and the run
    unwinds. Two safety nets: Flower and Ray can swallow the interrupt while they start, so a
    watchdog ends the run UNWIND_S later (``settle()`` marks what is still running, from its
    own connection); and a second signal ends it at once, the same way."""
    import signal
    import threading

    fired: list = []

    def finish(stop: BaseException) -> None:
        try:
            settle()
        finally:
            stop_now(stop)

    def handler(signum, frame):
        stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if fired:  # the second signal: do not wait for the unwinding
            finish(stop)
        fired.append(signum)
        timer = threading.Timer(UNWIND_S, finish, args=(stop,))
        timer.daemon = True
        timer.start()
        raise stop

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def stop_now(stop: BaseException) -> None:
    """Exit at once after an interruption: the running cell is already marked ``interrupted``
    (the runner does that); end every child process (Ray, Flower) and skip the interpreter's
    shutdown, whose thread pools can wait minutes for workers that will never answer."""
    import psutil

    code = 143 if isinstance(stop, Terminated) else 130
    print(f"fedfuse: {'terminated' if code == 143 else 'interrupted'}; finished cells are kept, the running one "
          "is marked interrupted and runs again next time", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Killed outright, and the process gone right after: Ray's client in this process would
    # otherwise notice its raylet gone and abort, and Flower's threads log the dead actors.
    from fedfuse.bench.cli.reaper import reaper_pid

    for child in psutil.Process().children(recursive=True):
        if child.pid != reaper_pid():  # it ends, after this process, what these leave behind
            with contextlib.suppress(psutil.Error):
                child.kill()
    os._exit(code)
