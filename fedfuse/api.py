"""fedfuse.api: everything a protocol plugin imports, and the promise made to plugin authors.

A protocol (built in or third party) imports only this module and its own folder. What is
here keeps its name and meaning across releases; everything else in fedfuse is internal and
may move. The guide is docs/writing-a-protocol.md; the worked example is
examples/plugin-template/.

Groups:

- **contract**: ``hookimpl`` and the spec records a plugin returns from its hooks.
- **run objects**: ``ServerRun`` (handed to a server loop) and ``ClientRun``
  (``client_run(context)`` in a ClientApp): the cell, its data, seeds, FLOP meter, services;
  ``Request``, what the harness asks a deployed client to generate (``run.deploy``).
- **rounds**: ``strategy_rounds`` (FedAvg-style rounds of a Flower strategy; ``fedavg_family``
  picks Flower's mean, median or trimmed mean), ``send_each``
  (custom messages), ``check_replies``, ``ClientFailure``.
- **toolkit**: UNet presets, the DDPM recipe (``DdpmConfig``, ``train`` with an
  ``extra_loss`` hook, ``fit`` for any batch loss, ``Ema``), sampling, the quantization codec,
  ``to_device`` (a CPU draw onto the training device without making the host wait for a GPU:
  use it in a batch loss of your own), ``write_atomic`` for cache files that concurrent cells share.
- **accounting**: ``FlopMeter`` and the record keys the harness reads (``PAYLOAD_KEY`` for a
  packed payload's logical size, ``EVAL_KEY`` for evaluation-only traffic), the cost model.
- **studies**: ``StudySpec`` (a suite ``fedfuse report`` turns into a page); for its claims,
  ``overlaps`` (two rows the seeds cannot tell apart), ``versus`` (below, above or not told
  apart), ``seeds_below`` (on how many shared seeds one row is below another), ``paired_count``
  (that count as a claim's words) and ``mean_std`` (a row's figure).
- **config helpers**: ``ConfigError``, ``require_positive``, ``added_later`` (a field that, at
  its default, leaves the ids of cells stored before it existed).
- **testing**: ``check_protocol`` runs a protocol on a tiny cell and checks what every
  plugin must satisfy (``fedfuse check protocol NAME`` on the command line); ``tiny_cell``,
  ``ClientDriver``, ``InProcessGrid``, ``run_in_process`` and ``as_flower_task`` drive a
  client or a whole cell in a test's own process (no Ray).
"""

import importlib
from typing import TYPE_CHECKING

from fedfuse.plugins import (
    DatasetSpec,
    MetricSpec,
    PartitionerSpec,
    ProtocolSpec,
    StudySpec,
    hookimpl,
)

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from fedfuse.bench.costs import costmodel
    from fedfuse.bench.costs.accounting import EVAL_KEY, PAYLOAD_KEY
    from fedfuse.bench.costs.flops import FlopMeter
    from fedfuse.bench.engine.scoring import Request
    from fedfuse.bench.engine.services import ClientRun, ServerRun, client_run
    from fedfuse.datasets import ClientData, ImageData
    from fedfuse.files import write_atomic
    from fedfuse.datasets.loading import load as load_dataset
    from fedfuse.plugins.config import ConfigError, added_later, require_positive
    from fedfuse.toolkit import quantization
    from fedfuse.toolkit.ddpm import (
        Ema,
        build_scheduler,
        diffusion_loss,
        evaluate,
        drop_labels,
        fit,
        train,
    )
    from fedfuse.toolkit.device import Resources, to_device
    from fedfuse.toolkit.models import build_unet
    from fedfuse.toolkit.recipe import PRESETS, DdpmConfig, Recipe, check_preset
    from fedfuse.bench.engine.rounds import (
        ClientFailure,
        check_replies,
        fedavg_family,
        last_trained,
        send_each,
        strategy_rounds,
    )
    from fedfuse.toolkit.sampling import Guided, conditioned, denoise, sample
    from fedfuse.toolkit.seeding import derive_seed, stable_hash
    from fedfuse.leaderboard.ranking import overlaps, paired_count, seeds_below, versus
    from fedfuse.leaderboard.render import mean_std
    from fedfuse.testing import ClientDriver, InProcessGrid, as_flower_task, run_in_process, tiny_cell

# name -> (module, attribute). Loaded on first use (PEP 562), so a plugin module that only
# declares its spec does not pay for torch, diffusers and flwr at `fedfuse plugins`.
_EXPORTS = {
    "costmodel": ("fedfuse.bench.costs", "costmodel"),
    "EVAL_KEY": ("fedfuse.bench.costs.accounting", "EVAL_KEY"),
    "PAYLOAD_KEY": ("fedfuse.bench.costs.accounting", "PAYLOAD_KEY"),
    "FlopMeter": ("fedfuse.bench.costs.flops", "FlopMeter"),
    "ClientRun": ("fedfuse.bench.engine.services", "ClientRun"),
    "ServerRun": ("fedfuse.bench.engine.services", "ServerRun"),
    "client_run": ("fedfuse.bench.engine.services", "client_run"),
    "Request": ("fedfuse.bench.engine.scoring", "Request"),
    "ClientData": ("fedfuse.datasets", "ClientData"),
    "ImageData": ("fedfuse.datasets", "ImageData"),
    "load_dataset": ("fedfuse.datasets.loading", "load"),
    "ConfigError": ("fedfuse.plugins.config", "ConfigError"),
    "require_positive": ("fedfuse.plugins.config", "require_positive"),
    "added_later": ("fedfuse.plugins.config", "added_later"),
    "quantization": ("fedfuse.toolkit", "quantization"),
    "DdpmConfig": ("fedfuse.toolkit.recipe", "DdpmConfig"),
    "Ema": ("fedfuse.toolkit.ddpm", "Ema"),
    "Recipe": ("fedfuse.toolkit.recipe", "Recipe"),
    "build_scheduler": ("fedfuse.toolkit.ddpm", "build_scheduler"),
    "diffusion_loss": ("fedfuse.toolkit.ddpm", "diffusion_loss"),
    "evaluate": ("fedfuse.toolkit.ddpm", "evaluate"),
    "fit": ("fedfuse.toolkit.ddpm", "fit"),
    "train": ("fedfuse.toolkit.ddpm", "train"),
    "Resources": ("fedfuse.toolkit.device", "Resources"),
    "to_device": ("fedfuse.toolkit.device", "to_device"),
    "PRESETS": ("fedfuse.toolkit.recipe", "PRESETS"),
    "build_unet": ("fedfuse.toolkit.models", "build_unet"),
    "check_preset": ("fedfuse.toolkit.recipe", "check_preset"),
    "ClientFailure": ("fedfuse.bench.engine.rounds", "ClientFailure"),
    "check_replies": ("fedfuse.bench.engine.rounds", "check_replies"),
    "send_each": ("fedfuse.bench.engine.rounds", "send_each"),
    "fedavg_family": ("fedfuse.bench.engine.rounds", "fedavg_family"),
    "last_trained": ("fedfuse.bench.engine.rounds", "last_trained"),
    "strategy_rounds": ("fedfuse.bench.engine.rounds", "strategy_rounds"),
    "denoise": ("fedfuse.toolkit.sampling", "denoise"),
    "conditioned": ("fedfuse.toolkit.sampling", "conditioned"),
    "Guided": ("fedfuse.toolkit.sampling", "Guided"),
    "drop_labels": ("fedfuse.toolkit.ddpm", "drop_labels"),
    "sample": ("fedfuse.toolkit.sampling", "sample"),
    "derive_seed": ("fedfuse.toolkit.seeding", "derive_seed"),
    "stable_hash": ("fedfuse.toolkit.seeding", "stable_hash"),
    "write_atomic": ("fedfuse.files", "write_atomic"),
    "overlaps": ("fedfuse.leaderboard.ranking", "overlaps"),
    "versus": ("fedfuse.leaderboard.ranking", "versus"),
    "seeds_below": ("fedfuse.leaderboard.ranking", "seeds_below"),
    "paired_count": ("fedfuse.leaderboard.ranking", "paired_count"),
    "mean_std": ("fedfuse.leaderboard.render", "mean_std"),
    # testing: a plugin's own tests (implemented in fedfuse.testing)
    "tiny_cell": ("fedfuse.testing", "tiny_cell"),
    "ClientDriver": ("fedfuse.testing", "ClientDriver"),
    "InProcessGrid": ("fedfuse.testing", "InProcessGrid"),
    "run_in_process": ("fedfuse.testing", "run_in_process"),
    "as_flower_task": ("fedfuse.testing", "as_flower_task"),
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"fedfuse.api has no '{name}' (see fedfuse.api.__all__)")
    module, attribute = _EXPORTS[name]
    owner = importlib.import_module(module)
    value = getattr(owner, attribute) if hasattr(owner, attribute) else importlib.import_module(f"{module}.{attribute}")
    globals()[name] = value  # cached: the next lookup is a plain attribute
    return value


def __dir__():
    return sorted(__all__)


def check_protocol(name: str, config: dict | None = None, *, rounds: int = 2, clients: int = 3,
                   dataset_args: dict | None = None, out=None) -> dict:
    """Run protocol ``name`` on a tiny cell of ``clients`` clients and ``rounds`` rounds and
    check the plugin contract: it finishes, reports the harness's keys, is deterministic, keeps
    client state in ``context.state`` (a run with a process per message agrees with a warm
    one), fails the cell by name when a client fails in round 2, counts its bytes at the grid
    and rejects unknown config keys. ``config`` overrides the tiny config; ``dataset_args``:
    digits' arguments (e.g. ``{"public_classes": [0, 1, 2, 3, 4]}`` for a protocol that
    pre-trains); ``out``: keep the runs' folders there. Returns the report: ``report["ok"]``,
    and ``report["rules"]``, each ``{"rule", "ok", "seen"}``."""
    from fedfuse.bench.engine.conformance import check

    return check(name, config, out=out, dataset_args=dataset_args, rounds=rounds, clients=clients)


# The one list of public names: those defined or imported above, then the lazy ones. The
# TYPE_CHECKING block repeats the lazy ones for editors; tests/unit/test_api.py keeps the two
# equal, and checks that every name has a docstring and a row in docs/writing-a-protocol.md.
__all__ = ["hookimpl", "ProtocolSpec", "MetricSpec", "DatasetSpec", "PartitionerSpec", "StudySpec", "check_protocol",
           *_EXPORTS]
