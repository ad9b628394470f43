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
pyproject, is not installed); a task of any other app is answered with an error.
It uses Flower's Runtime API client and the helpers of ``flwr.supernode.runtime.run_clientapp``
(verified with flwr 1.42), because Flower has no supported warm executor for ClientApps.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback

from flwr.app import Message
from flwr.common.serde import context_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.task_identity import TaskIdentity
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

CELL_APP = "fedfuse/fedfuse-cell"  # flower_app.PYPROJECT's publisher/name
# A task is offered while its SuperNode is still fetching the message's arrays from the
# SuperLink; Flower's pull then retries after 1 s, 2 s, 4 s... (PULL_INITIAL_BACKOFF). The
# arrays are local and arrive in milliseconds, so this executor retries far sooner.
PULL_BACKOFF_S, PULL_BACKOFF_CAP_S = 0.01, 0.05
log = logging.getLogger("fedfuse.executor")


def runtime_client(address: str, component: str, token: str | None = None) -> RuntimeHttpClient:
    """A client of the SuperNode's Runtime API (on this machine, no TLS: Flower's default)."""
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=interceptors,
                                                 retry_invoker=make_simple_http_retry_invoker())


def serve_executor(address: str, poll_s: float = 0.05) -> None:
    """Ask the SuperNode for ClientApp tasks every ``poll_s`` and run each here, for ever."""
    from fedfuse.bench.engine.flower import CellClientApp

    wait_until_listening(address)
    app, tasks = CellClientApp(), runtime_client(address, "SuperExec")
    log.info("fedfuse executor serving the SuperNode at %s", address)
    while True:
        acquired = tasks.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value]))
        if acquired.HasField("task") and acquired.token:
            run_task(address, acquired.token, app)
        else:
            time.sleep(poll_s)


def log_tasks() -> None:
    """One line a task, with the time of each phase (not every HTTP request)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def wait_until_listening(address: str, timeout_s: float = 120) -> None:
    """Until the SuperNode's Runtime API accepts connections (the node starts beside this)."""
    host, port = address.rsplit(":", 1)
    deadline = time.time() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def pull_task_input(client: RuntimeHttpClient):
    """The task's message, Context and Run: ``run_clientapp.pull_task_input`` with short retries."""
    task = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = task.task_id, task.run.run_id, task.context.node_id
    context, run = context_from_proto(task.context), run_from_proto(task.run)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("no message for this task from the SuperNode's Runtime API")
    node, tree = Node(node_id=context.node_id), pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=PULL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S)
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower sets it: the tree's id
    return message, context, run


def run_task(address: str, token: str, app) -> None:
    """One task, as ``flwr-clientapp`` runs it: the reply (or an error reply) and the Context pushed back."""
    client = runtime_client(address, "flwr-clientapp", token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    status, details, times = SubStatus.FAILED, "", [time.perf_counter()]
    try:
        message, context, run = pull_task_input(client)
        times.append(time.perf_counter())
        if run.fab_id != CELL_APP:
            raise RuntimeError(f"this SuperNode's fedfuse executor runs only {CELL_APP}, not {run.fab_id}")
        reply, status = app(message, context), SubStatus.COMPLETED
    except Exception as err:  # noqa: BLE001 — reported to the server as the ClientApp's error, as Flower does
        details = f"{type(err).__name__}: {err}"
        log.error("fedfuse executor: the ClientApp raised:\n%s", traceback.format_exc())
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
    finally:
        times.append(time.perf_counter())
        try:
            push_outcome(client, reply, context, status, details)
        finally:
            heartbeat.stop()
            client.close()
    times.append(time.perf_counter())
    log.info("fedfuse executor: %s, %s", message.metadata.message_type if message else "task",
             ", ".join(f"{what} {b - a:.2f} s" for what, a, b in zip(("pull", "app", "push"), times, times[1:])))


def push_outcome(client: RuntimeHttpClient, reply: Message | None, context, status: str, details: str) -> None:
    """The reply (if there is one) and the task's end, with the Context the app left."""
    if reply is not None and context is not None:
        push_message(client, reply, context)
    push_task_output(client, context, status, details)


if __name__ == "__main__":  # python -m fedfuse.bench.engine.executor RUNTIME_ADDRESS (`fedfuse worker`)
    import sys

    log_tasks()
    serve_executor(sys.argv[1])
