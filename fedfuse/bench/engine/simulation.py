"""Run one cell on Flower's simulation engine (Ray), in this process.

One Ray runtime serves every cell of a ``fedfuse run``: the first cell starts it, later cells
find it running (Flower's backend only starts Ray if it is not), and it ends with the process.
Its ClientApp actors are kept warm too: a Flower actor is a stateless worker (each message
comes with the ClientApp to run and the client's Context), so a later cell reuses the idle
actors instead of paying a new process and its imports per actor. No client state crosses
cells: that lives in the Context, which Flower makes per run. A cell the server failed for a
client's reply (a client that raised, a malformed or refused update) leaves Ray running, as an
ok cell does: the ServerApp ended normally and the actors answered. Any other failure ends Ray
and its actors, and an actor found dead is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from fedfuse.bench.engine.flower import CLIENT_THREADS_ENV, FRESH_PROCESS_KEY, CellClientApp, serve
from fedfuse.bench.engine.rounds import ClientFailure
from fedfuse.bench.engine.services import RUN_CONFIG_KEY, RUN_DIR_KEY, ServerRun
from fedfuse.bench.engine.validation import BadReply

# Failures the server raised about a client's reply: Ray and its actors are healthy after them.
REPLY_FAILURES = (BadReply, ClientFailure)


def cluster_address() -> str | None:
    """A running Ray cluster to join (``fedfuse run --ray-address``, or Ray's own RAY_ADDRESS),
    or None: start Ray here."""
    return os.environ.get("RAY_ADDRESS") or None


def backend_config(system) -> dict:
    """Ray's shares per ClientApp from the cell's resources (torch inside an actor uses as many
    threads as it has CPUs); the GPUs Ray may hand out are the ones torch sees. On a cluster,
    its own resources stand: no local counts (Ray refuses them when joining one)."""
    import torch

    if cluster_address():
        return {"client_resources": {"num_cpus": system.cpus_per_client, "num_gpus": system.gpus_per_client},
                "init_args": {}}
    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if system.gpus_per_client > 0 else 0
    per_actor = cpus if _ONE_ACTOR.is_set() else min(system.cpus_per_client, cpus)
    return {
        "client_resources": {"num_cpus": per_actor, "num_gpus": system.gpus_per_client},
        "init_args": {"num_cpus": cpus, "num_gpus": gpus, "logging_level": "error", "log_to_driver": False},
    }


def quiet_environment() -> None:
    """No telemetry (Flower reports usage over the network unless told not to), no hub
    look-ups, and no progress bars or notices from Ray and transformers in the display."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")  # no look-up of newer Flower releases
    os.environ.setdefault(CLIENT_THREADS_ENV, "1")  # as many torch threads as the CPUs a ClientApp is given
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray's C++ core would otherwise turn SIGTERM into an abort (exit 134) in this process:
    # fedfuse handles it as Ctrl-C (the running cell marked interrupted, exit 143).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models load from local directories only
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


_RAY_STARTED_FOR: str | None = None  # the settings the running Ray was started with
_IDLE_ACTORS: list = []  # ClientApp actors the last cell left idle, for the next one
_FRESH_PROCESSES = threading.Event()  # set: every client message in a process of its own
_ONE_ACTOR = threading.Event()  # set: one ClientApp actor serves every client


@contextlib.contextmanager
def fresh_processes():
    """Cells run here serve every client message in a process forked for it from a new actor
    that runs no client code itself: nothing a client keeps outside its Context survives
    from one message to the next, nor passes between clients or cells (the conformance
    check's state rule compares such a run with a warm one)."""
    with _set(_FRESH_PROCESSES):
        yield


@contextlib.contextmanager
def one_actor():
    """Cells run here have one ClientApp actor (still ``cpus_per_client`` torch threads), so
    a warm run passes every message through one process: what a client keeps outside its
    Context is then certain to reach its next message and the other clients' (the
    conformance check's warm run), not left to how Ray spreads messages over actors."""
    with _set(_ONE_ACTOR):
        yield


@contextlib.contextmanager
def _set(event: threading.Event):
    event.set()
    try:
        yield
    finally:
        event.clear()


def retire_idle_actors() -> None:
    """End the actors earlier cells left warm (they may hold what a client kept in a global)."""
    import ray

    for actor in _IDLE_ACTORS:
        ray.kill(actor, no_restart=True)
    _IDLE_ACTORS.clear()


@contextlib.contextmanager
def ray_kept_running(settings: str):
    """Flower's Ray backend shuts Ray down when a run ends; keep the runtime for the next cell
    (the backend still ends the run's actors). Ray's own exit hook shuts it down at exit. A
    cell with other settings (Ray's resources, the workers' threads) gets a fresh Ray: workers
    keep the environment they were started with."""
    import ray

    global _RAY_STARTED_FOR
    if ray.is_initialized() and settings != _RAY_STARTED_FOR:
        ray.shutdown()
    if not ray.is_initialized():
        _IDLE_ACTORS.clear()  # they ended with the runtime
    _RAY_STARTED_FOR = settings
    reused = ray.is_initialized()
    if not reused and cluster_address():
        join_cluster(ray, cluster_address())
    shutdown, ray.shutdown = ray.shutdown, lambda *args, **kwargs: None
    try:
        yield reused
    except REPLY_FAILURES:
        raise
    except Exception:  # any other failure: end Ray now, as Flower would (the next cell starts afresh)
        # (An interrupt passes through untouched: the CLI marks the cell, kills Ray's processes
        # and exits at once; a shutdown here would race Flower's threads still using Ray.)
        ray.shutdown = shutdown
        shutdown()
        _IDLE_ACTORS.clear()
        raise
    finally:
        ray.shutdown = shutdown


def join_cluster(ray, address: str) -> None:
    """Connect to a running Ray cluster (nothing is started here; disconnecting, as a failed
    cell does, leaves it running). Its workers get the environment fedfuse's ClientApps read,
    which a cluster's raylets do not inherit from this process, and this process's import path
    (Flower passes it the same way; on other machines fedfuse and the plugins must be installed
    where that path points, or on the workers' own)."""
    names = (CLIENT_THREADS_ENV, "FEDFUSE_CACHE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS",
             "TRANSFORMERS_VERBOSITY", "FLWR_TELEMETRY_ENABLED", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO")
    env = {n: os.environ[n] for n in names if n in os.environ}
    env["PYTHONPATH"] = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    ray.init(address=address, runtime_env={"env_vars": env}, logging_level="error", log_to_driver=False)


def cluster_figures() -> dict:
    """What a cell ran on when it joined a cluster: its live nodes and their CPUs and GPUs."""
    import ray

    if not cluster_address() or not ray.is_initialized():
        return {}
    total = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"ray_nodes": len(nodes), "ray_cpus": float(total.get("CPU", 0)), "ray_gpus": float(total.get("GPU", 0))}


@contextlib.contextmanager
def actors_kept_warm():
    """Flower's pool creates its actors when a run starts and ends them when it ends; here
    it takes live idle actors first and hands its actors back instead of ending them."""
    from flwr.simulation.ray_transport.ray_actor import BasicActorPool

    add, end = BasicActorPool.add_actors_to_pool, BasicActorPool.terminate_all_actors

    def add_warm(pool, num_actors: int) -> None:
        warm = live(_IDLE_ACTORS[:num_actors])
        del _IDLE_ACTORS[:num_actors]
        pool.pool.extend(warm)
        pool.num_actors += len(warm)
        add(pool, num_actors - len(warm))
        # the engine has started once the new actors' processes are up; waited for on a thread of
        # its own: a signal arriving in Ray's wait on the main thread would become a SystemExit
        threading.Thread(target=ready, args=(pool.pool[len(warm):],), daemon=True).start()

    def keep(pool) -> None:
        _IDLE_ACTORS.extend(pool.pool)
        pool.pool.clear()

    BasicActorPool.add_actors_to_pool, BasicActorPool.terminate_all_actors = add_warm, keep
    _ENGINE_UP.clear()
    try:
        yield
    finally:
        BasicActorPool.add_actors_to_pool, BasicActorPool.terminate_all_actors = add, end


def ready(actors: list, timeout: float = 120) -> None:
    """Sets ``_ENGINE_UP`` once new actors' processes are up (at most ``timeout`` later: a slow
    start is not a failure; an engine stopping meanwhile ends the wait)."""
    import ray

    pending, deadline = [actor.__ray_ready__.remote() for actor in actors], time.time() + timeout
    while pending and time.time() < deadline and not _ENGINE_DOWN.is_set():
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
    _ENGINE_UP.set()


def live(actors: list) -> list:
    """The actors that still answer (one whose process died, e.g. killed for memory, does not)."""
    import ray

    alive = []
    for actor in actors:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=30)
            alive.append(actor)
        except Exception:  # noqa: BLE001 - dead or unreachable: freed now, a new one replaces it
            ray.kill(actor, no_restart=True)
    return alive


_NODE_PARTITIONS: dict[int, int] = {}  # {node id: partition id} of the running simulation
_ENGINE_UP = threading.Event()  # set once the running simulation's ClientApp actors are up
_ENGINE_DOWN = threading.Event()  # set when run_simulation returns or raises (Ctrl-C): stop waiting


@contextlib.contextmanager
def node_partitions_recorded():
    """Flower's simulation registers its virtual SuperNodes itself, partition i to a random node
    id; keep that map, so the harness need not ask every node (a message each: 20 ms a node on
    2 cores, 200 s for 10,000 registered clients)."""
    from flwr.server.superlink.fleet.vce import vce_api

    register = vce_api._register_nodes

    def recording(*args, **kwargs):
        mapping = register(*args, **kwargs)
        _NODE_PARTITIONS.update(mapping)
        return mapping

    _NODE_PARTITIONS.clear()
    vce_api._register_nodes = recording
    try:
        yield
    finally:
        vce_api._register_nodes = register


def recorded_partitions(expected: int, timeout: float = 300) -> dict[int, int]:
    """The recorded map once the simulation has registered its nodes and its actors are up (the
    ServerApp's thread starts first): what the cell's ``engine_start_s`` measures."""
    deadline = time.time() + timeout
    while len(_NODE_PARTITIONS) < expected or not _ENGINE_UP.is_set():
        if _ENGINE_DOWN.is_set():  # interrupted while starting: end this thread, so the process can
            raise RuntimeError("the simulation engine stopped before it started")
        if time.time() > deadline:
            raise RuntimeError(f"the simulation engine did not start in {timeout:.0f} s ({len(_NODE_PARTITIONS)} "
                               f"of {expected} nodes registered)")
        time.sleep(0.02)
    return dict(_NODE_PARTITIONS)


def run_cell(run: ServerRun, server_loop) -> dict:
    """Run ``server_loop(grid, run)`` as the ServerApp, the protocol's ClientApp on
    ``cell.clients`` virtual SuperNodes. Returns the loop's final metrics (and whether the
    cell reused a running Ray); raises the loop's error."""
    quiet_environment()
    os.environ[CLIENT_THREADS_ENV] = str(run.cell.system.cpus_per_client)
    outcome: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context):
        outcome["metrics"] = serve(grid, run, server_loop, recorded_partitions)

    fresh = _FRESH_PROCESSES.is_set()
    client_app = CellClientApp({RUN_CONFIG_KEY: run.cell.to_json(), RUN_DIR_KEY: str(run.run_dir.resolve()),
                                **({FRESH_PROCESS_KEY: "1"} if fresh else {})})
    config = backend_config(run.cell.system)
    settings = json.dumps([config, os.environ[CLIENT_THREADS_ENV]], sort_keys=True)
    with ray_kept_running(settings) as reused, actors_kept_warm(), node_partitions_recorded():
        if fresh:
            retire_idle_actors()
        _ENGINE_DOWN.clear()
        try:
            run_simulation(server_app, client_app, num_supernodes=run.cell.clients, backend_config=config)
        finally:
            _ENGINE_DOWN.set()
        if "metrics" not in outcome:  # raised inside: a failed cell ends Ray and its actors
            raise RuntimeError("the server loop did not finish (see the cell's log)")
        cluster = cluster_figures()
    return {**outcome["metrics"], "engine_reused": float(reused), **cluster}
