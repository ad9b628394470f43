"""A warm executor: runs every ClientApp task of one SuperNode in this long-lived process.

Flower's SuperExec starts a fresh ``flwr-clientapp`` process for each message; importing Flower,
torch and fedfuse and reloading the client's data costs seconds a message, more than the
training of a small round. A SuperNode started with ``--isolation process`` leaves launching
to an executor of the user's choice, which asks the node's Runtime API for tasks. This is one:
it takes each ClientApp task and runs it here, with the same calls ``flwr-clientapp`` makes
(pull the task's message and Context, run the app, push the reply and the Context back), so
torch, the data and the per-process caches stay loaded, as in a simulation actor. A client's
private state is Flower's ``context.state`` in both engines; the caches only save work.

It serves fedfuse's cell app only (the code is the installed fedfuse, so the FAB, a bare
pyproject, is not installed); a task of any other app is answered with an error. Whatever goes
wrong with one task (the node restarts, the run is stopped, a push fails) ends that task, not
the executor. It uses Flower's Runtime API client and the helpers of
``flwr.supernode.runtime.run_clientapp`` (verified with flwr 1.42), because Flower has no
supported warm executor for ClientApps. Start it with ``fedfuse worker --supernode HOST:PORT``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import RetryInvoker, exponential, make_simple_http_retry_invoker
from flwr.supercore.run import RunNotRunningException
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime import run_clientapp

from fedfuse.deploy.local import accepts
from fedfuse.deploy.flower_patches import TASK_HEARTBEAT_S, IdleBackoff, shorten_task_pulls, warn_unless

CELL_APP = "fedfuse/fedfuse-cell"  # flower_app.PYPROJECT's publisher/name
log = logging.getLogger("fedfuse.executor")


def runtime_client(address: str, component: str, token: str | None = None,
                   retries: RetryInvoker | None = None) -> RuntimeHttpClient:
    """A client of the SuperNode's Runtime API (on this machine, no TLS: Flower's default)."""
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors,
                                                 retry_invoker=retries or make_simple_http_retry_invoker())


def task_retries() -> RetryInvoker:
    """A task's requests: retried on network errors for up to 30 s, any refusal raised at once.
    (Flower's own invoker answers a 401 by sending SIGINT to its process: right for a process
    per task, fatal for this one.)"""
    return RetryInvoker(lambda: exponential(max_delay=2), httpx.TransportError, max_tries=None, max_time=30)


class TaskHeartbeat:
    """Tells the SuperNode every ``TASK_HEARTBEAT_S`` that the task is alive (Flower's sender beats
    every 20 s or so and sends SIGINT when the node has forgotten the task): a node started by
    ``deploy local`` gives up on a task after ``TASK_TTL_S`` without a beat, so a dead executor's
    task fails in seconds (flower_patches.shorten_task_ttl)."""

    def __init__(self, client: RuntimeHttpClient):
        self.client, self.stopped = client, threading.Event()
        self.thread = threading.Thread(target=self.run, name="fedfuse-task-heartbeat", daemon=True)

    def run(self) -> None:
        while not self.stopped.wait(TASK_HEARTBEAT_S):
            try:
                if not self.client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success:
                    log.warning("fedfuse executor: the SuperNode no longer knows the task in progress")
            except httpx.HTTPError:
                pass  # the next beat tries again

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def serve_executor(address: str, poll_s: float = 0.05) -> None:
    """Ask the SuperNode for ClientApp tasks every ``poll_s`` (less often after a while without
    any: ``flower_patches.IdleBackoff``) and run each here, for ever."""
    from fedfuse.bench.engine.flower import CellClientApp

    warn_unless(shorten_task_pulls(), "ClientApp runtime")  # arrays still in flight: retry in ms (flower_patches.py)
    wait_until_listening(address)
    app, tasks = CellClientApp(), runtime_client(address, "SuperExec")
    log.info("fedfuse executor serving the SuperNode at %s", address)
    backoff = IdleBackoff(poll_s)
    while True:
        acquired = tasks.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value]))
        if acquired.HasField("task") and acquired.token:
            run_task(address, acquired.token, app)
            backoff.worked()
        else:
            time.sleep(backoff.wait_s())


def log_tasks() -> None:
    """One line a task, with the time of each phase (not every HTTP request)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def wait_until_listening(address: str, timeout_s: float = 120) -> None:
    """Until the SuperNode's Runtime API accepts connections (the node starts beside this)."""
    host, port = address.rsplit(":", 1)
    deadline = time.time() + timeout_s
    while not accepts(host, int(port)):
        if time.time() > deadline:  # a TimeoutError is an OSError, as a refused connection was
            raise TimeoutError(f"the SuperNode's Runtime API at {address} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def run_task(address: str, token: str, app) -> None:
    """One task; whatever goes wrong with it is logged and ends it, never the executor."""
    client = runtime_client(address, "flwr-clientapp", token, task_retries())
    try:
        with TaskHeartbeat(client):
            serve_task(client, app)
    except (Exception, RunNotRunningException) as err:  # noqa: BLE001 — the node restarted, the run stopped...
        log.error("fedfuse executor: task lost: %s: %s", type(err).__name__, err)
    finally:
        client.close()


def serve_task(client: RuntimeHttpClient, app) -> None:
    """As ``flwr-clientapp`` does: pull the message and Context, run the app, push the reply,
    and end the task with the Context the app left (its ``state`` is the client's state)."""
    times, context, status, details, kind = [time.perf_counter()], None, SubStatus.FAILED, "", "task"
    try:
        message, context, run, _ = run_clientapp.pull_task_input(client)
        times.append(time.perf_counter())
        kind = message.metadata.message_type
        reply, status, details = answer(app, message, context, run.fab_id)
        times.append(time.perf_counter())
        run_clientapp.push_message(client, reply, context)
    finally:
        run_clientapp.push_task_output(client, context, status, details)
    times.append(time.perf_counter())
    log.info("fedfuse executor: %s, %s", kind,
             ", ".join(f"{what} {b - a:.2f} s" for what, a, b in zip(("pull", "app", "push"), times, times[1:])))


def answer(app, message: Message, context, fab_id: str) -> tuple[Message, str, str]:
    """The ClientApp's reply, or an error reply naming what it raised (as flwr-clientapp sends)."""
    try:
        if fab_id != CELL_APP:
            raise RuntimeError(f"this SuperNode's fedfuse executor runs only {CELL_APP}, not {fab_id}")
        return app(message, context), SubStatus.COMPLETED, ""
    except Exception as err:  # noqa: BLE001 — reported to the server as the ClientApp's error, as Flower does
        details = f"{type(err).__name__}: {err}"
        log.error("fedfuse executor: the ClientApp raised:\n%s", traceback.format_exc())
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message), \
            SubStatus.FAILED, details
