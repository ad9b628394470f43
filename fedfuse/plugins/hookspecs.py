"""Every hook fedfuse calls. This module is the plugin author's reference.

A plugin is a module or object with functions named like the hooks below, decorated with
``fedfuse.plugins.hookimpl``. Make it visible through the ``fedfuse`` entry-point group::

    [project.entry-points.fedfuse]
    my-protocol = "my_package.plugin"

fedfuse's own protocols and datasets are registered exactly this way (see its
``pyproject.toml``). A function whose name starts with ``fedfuse_`` but is not declared here
is an error at start-up, so a typo never goes unnoticed.

Two kinds of hook:

* **collect** hooks (``fedfuse_add_*``) are called on every plugin; each returns a list of
  spec records (:mod:`fedfuse.plugins.specs`). A name registered twice is an error naming
  both plugins.
* **observe** hooks (``fedfuse_run_*``, ``fedfuse_round_end``) are called on every plugin
  as a run progresses: progress displays, result sinks, publishers. Their return value is
  ignored. They run in the harness process, on the thread that runs the server loop.
"""

from __future__ import annotations

from fedfuse.plugins import hookspec


@hookspec
def fedfuse_add_protocols():
    """Return a list of :class:`~fedfuse.plugins.specs.ProtocolSpec`.

    A protocol is a pair: a server loop ``server(grid, run) -> dict`` that owns the whole
    exchange (FedAvg rounds, split-learning activations, anything expressible as Flower
    ``Message``\\ s), and a Flower ``ClientApp``. The config is a dataclass: suite keys are
    validated against its fields and types before anything runs (``__post_init__`` may raise
    ``ValueError`` for its own checks; a method ``check_clients(n)`` checks what depends on the
    number of clients, e.g. one value per client). Either error becomes the user's, with the
    suite file's line.

    Example::

        @hookimpl
        def fedfuse_add_protocols():
            return [ProtocolSpec(name="my-proto", version="1", config=MyConfig,
                                 server=server_main, client_app=client_app.app)]
    """


@hookspec
def fedfuse_add_datasets():
    """Return a list of :class:`~fedfuse.plugins.specs.DatasetSpec`.

    ``load()`` must not download anything: read files that are installed or shipped, and
    fail with a message that says how to install them when they are missing. It returns a
    :class:`fedfuse.datasets.ImageData` with a fixed held-out evaluation split that no
    protocol trains on.
    """


@hookspec
def fedfuse_add_partitioners():
    """Return a list of :class:`~fedfuse.plugins.specs.PartitionerSpec`.

    A partition must be a pure function of (dataset, partitioner, args, seed).
    """


@hookspec
def fedfuse_add_profiles():
    """Return a list of :class:`fedfuse.bench.costs.hardware.DeviceProfile` and
    :class:`~fedfuse.bench.costs.hardware.NetworkProfile`.

    Every number of a profile should carry its source (a datasheet, a 3GPP report, a published
    paper's simulation settings) in a comment next to it; see ``fedfuse/bench/costs/profiles/``.
    Suites assign them to clients; the cost model (:mod:`fedfuse.bench.costs.costmodel`) maps each
    client's measured FLOPs and bytes through them to time and energy.
    """


@hookspec
def fedfuse_add_metrics():
    """Return a list of :class:`~fedfuse.plugins.specs.MetricSpec`.

    Every metric a cell reports should have a spec: its unit, whether higher is better and
    how it aggregates. Leaderboards rank by these specs, never by special cases.
    """


@hookspec
def fedfuse_add_studies():
    """Return a list of :class:`~fedfuse.plugins.specs.StudySpec`.

    A study names a suite whose results ``fedfuse report`` turns into a page: the columns
    and figure panels the study is about, and the claims it checks on the measured rows.
    """


@hookspec(firstresult=True)
def fedfuse_publish(results, target, options):
    """Publish ``results`` (the results-schema records of an output directory, plus the ranked
    leaderboard rows under ``options["rows"]``) to the named ``target`` ("wandb", ...).

    Return a short description of what was published if ``target`` is yours, else None: the
    first plugin that answers wins. ``options`` carries the CLI's ``--project``, ``--entity``,
    ``--mode`` and ``out`` (the output directory).
    """


@hookspec
def fedfuse_run_start(run):
    """A cell starts. ``run`` is the :class:`fedfuse.bench.engine.services.ServerRun`."""


@hookspec
def fedfuse_round_end(run, round, record):
    """Round ``round`` (1-based) of ``run`` ended; ``record`` is a dict of its figures."""


@hookspec
def fedfuse_status(run, message):
    """A protocol reports what it is doing (``run.status("pre-training 300/600")``)."""


@hookspec
def fedfuse_run_end(run, result):
    """A cell ended. ``result`` is a dict: ``status`` ("ok"/"failed"), ``error``, ``metrics``."""
