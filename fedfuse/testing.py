"""What a plugin author's own tests need, without Ray or a command line. A plugin imports these
names from ``fedfuse.api`` (its one promise to plugin authors); they are implemented here.

- ``tiny_cell(protocol, config, clients=, rounds=, ...)``: one cell of a protocol, as a suite of
  that one entry would expand it (digits by default).
- ``ClientDriver(cell, partition)``: one client's ClientApp called as Flower calls it, with a
  Context that persists from message to message (``driver.state``), so a test can drive a
  client over several rounds and look at what it keeps.
- ``InProcessGrid``: a Flower ``Grid`` that hands every message to its client's driver in this
  process, one message at a time.
- ``run_in_process(cell, run_dir)``: the whole cell, the protocol's server loop and the
  harness's scoring, over an ``InProcessGrid``: its final metrics in seconds for a tiny model,
  the model the simulation engine trains (clients on the cell's torch threads, the server on
  this process's). The real engines (``fedfuse run``) are what results come from; this is for tests.
- ``as_flower_task(node_id)``: the task identity Flower's engines set, for a test that builds
  a ``Message`` itself (``SERVER_NODE`` for the server's).
- ``check_protocol``: the conformance rules (``fedfuse check protocol``), on the real engine.

Example (the plugin template's tests use these)::

    from fedfuse.api import ClientDriver, run_in_process, tiny_cell

    cell = tiny_cell("fedavgm", {"local_steps": 2}, clients=2, rounds=2)
    metrics = run_in_process(cell, tmp_path)
    assert metrics["fid"] > 0 and metrics["bytes_up"] > 0
"""

from __future__ import annotations

import contextlib
import os
import traceback
from pathlib import Path
from uuid import uuid4

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedfuse.api import check_protocol
from fedfuse.bench.engine.flower import CLIENT_THREADS_ENV, CellClientApp, serve
from fedfuse.bench.engine.packing import packed_messages, unpacked
from fedfuse.bench.engine.runner import final_metrics, metric_specs
from fedfuse.bench.engine.services import PARTITIONS_FILE, RUN_CONFIG_KEY, RUN_DIR_KEY, ServerRun
from fedfuse.bench.suites.cells import CellSpec

__all__ = ["tiny_cell", "ClientDriver", "InProcessGrid", "run_in_process", "as_flower_task", "check_protocol"]

NODE_OFFSET = 1000  # client k is node NODE_OFFSET + k (Flower's node ids are never 0)
SERVER_NODE = 0  # Flower's SuperLink node id: the server's messages come from it


@contextlib.contextmanager
def as_flower_task(node_id: int):
    """What Flower's engines set around an app's code: the task identity (run, task, node)
    every Message it creates is stamped with."""
    from flwr.supercore.task_identity import TaskIdentity

    names = ("_task_id", "_run_id", "_node_id")
    before = [getattr(TaskIdentity, name) for name in names]
    TaskIdentity.task_id = TaskIdentity.run_id = 1
    TaskIdentity.node_id = node_id
    try:
        yield
    finally:
        for name, value in zip(names, before):
            setattr(TaskIdentity, name, value)


def tiny_cell(protocol: str, config: dict | None = None, *, clients: int = 2, rounds: int = 2,
              dataset: str = "digits", dataset_args: dict | None = None, seed: int = 0, samples: int = 16,
              sample_steps: int = 2, mia_samples: int = 32, **matrix) -> CellSpec:
    """The one cell a suite of ``protocol`` with ``config`` expands to: ``clients`` clients
    (an iid split unless ``matrix`` says ``partitioners``), ``rounds`` rounds, ``seed``,
    ``samples`` images of ``sample_steps`` steps scored and the membership attack on
    ``mia_samples`` images. Other ``matrix`` keys are a suite's ``[matrix]`` keys
    (docs/suites.md), e.g. ``participation=1``."""
    from fedfuse.bench.suites.expand import expand
    from fedfuse.bench.suites.parse import parse_suite
    from fedfuse.plugins.manager import registry

    doc = {"format": 1, "suite": {"name": "tiny-cell", "version": "1"},
           "matrix": {"datasets": [{"name": dataset, **(dataset_args or {})}], "seeds": [seed], "clients": clients,
                      "rounds": rounds, "samples": samples, "sample_steps": sample_steps,
                      "mia_samples": mia_samples, **matrix},
           "protocols": [{"name": protocol, "config": dict(config or {})}]}
    (cell,) = expand(parse_suite(doc, Path(f"tiny_cell({protocol!r})"), ""), registry())
    return cell


class ClientDriver:
    """Client ``partition`` of ``cell``: ``send(content, message_type)`` calls its ClientApp
    as Flower's engine does (the harness's wrapper included: the cell in the run config, the
    FLOPs measured) and returns the reply as the server's grid hands it to a protocol. The
    Context, and so ``state``, lasts from one message to the next. A ClientApp that raises
    gives the error reply Flower would (``reply.has_error()``)."""

    def __init__(self, cell: CellSpec, partition: int, run_dir: Path | None = None):
        from flwr.app import Context

        self.cell, self.partition, self.node_id = cell, partition, NODE_OFFSET + partition
        run_config = {RUN_CONFIG_KEY: cell.to_json()}
        if run_dir is not None and (Path(run_dir) / PARTITIONS_FILE).is_file():
            run_config[RUN_DIR_KEY] = str(Path(run_dir).resolve())
        self._app = CellClientApp(run_config)
        self.context = Context(run_id=1, node_id=self.node_id, state=RecordDict(), run_config={},
                               node_config={"partition-id": partition, "num-partitions": cell.clients})

    @property
    def state(self) -> RecordDict:
        """What the client keeps in ``context.state`` between messages."""
        return self.context.state

    def send(self, content: RecordDict, message_type: str = "train", round: int = 1) -> Message:
        """One message of ``message_type`` (its ``group_id`` the round, as Flower's strategies set it)."""
        with as_flower_task(SERVER_NODE):
            message = Message(content, dst_node_id=self.node_id, message_type=message_type, group_id=str(round))
        message.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's grids stamp it
        return unpacked(self.deliver(packed_messages([message])[0]))

    def deliver(self, message: Message) -> Message:
        """The ClientApp's reply to a message already addressed and stamped (packed, as on the wire)."""
        import torch

        threads = torch.get_num_threads()  # the client pins its own (as in an engine's worker); the caller's come back
        with as_flower_task(self.node_id):
            try:
                return self._app(message, self.context)
            except Exception:  # noqa: BLE001 - as Flower's engine: the client's error becomes its reply
                reason = traceback.format_exc()
                return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
            finally:
                torch.set_num_threads(threads)


class InProcessGrid(Grid):
    """A Flower Grid over ``drivers`` (node id: ClientDriver): each pushed message is answered
    at once, in this process, by its node's driver."""

    def __init__(self, drivers: dict[int, ClientDriver]):
        from flwr.supercore.run import Run

        self.drivers, self._replies = drivers, {}
        self._run = Run.create_empty(run_id=1)

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:
        return list(self.drivers)

    def push_messages(self, messages) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            self._replies[message.metadata.message_id] = self.drivers[message.metadata.dst_node_id].deliver(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_in_process(cell: CellSpec, run_dir: Path, registry=None) -> dict:
    """``cell`` end to end in this process: the protocol's server loop over an InProcessGrid of
    its clients, then the harness's scoring of what it deployed. Returns the final metrics as
    a results store would hold them, rounds folded (``run_dir`` gets the cell's files)."""
    from fedfuse.plugins.manager import registry as default_registry

    registry = registry or default_registry()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = ServerRun.for_cell(cell, run_dir, registry)
    drivers = {NODE_OFFSET + p: ClientDriver(cell, p, run_dir) for p in range(cell.clients)}
    server_loop = registry.get("protocols", cell.protocol).load_server()
    os.environ[CLIENT_THREADS_ENV] = str(cell.system.cpus_per_client)  # a client's torch threads, as the engines set
    with as_flower_task(SERVER_NODE):
        metrics = serve(InProcessGrid(drivers), run, server_loop, lambda expected: {n: d.partition for n, d in drivers.items()})
    return final_metrics(run, metrics, *metric_specs(registry))
