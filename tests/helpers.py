"""What the tests share besides fixtures: the CLI runner and a suite writer. (A module of its
own: `conftest` is a name both tests/ and benchmarks/ use, so it cannot be imported by name.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


class CLI:
    """Runs ``fedfuse`` as a user would, with extra plugin distributions on the path."""

    def __init__(self, cwd: Path, extra_path: list[Path] = ()):
        self.cwd, self.extra_path = cwd, [str(p) for p in extra_path]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*self.extra_path, os.environ.get("PYTHONPATH", "")]),
                   COLUMNS="200")
        return subprocess.run([sys.executable, "-m", "fedfuse.bench.cli", *args], cwd=self.cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def results(self, out: Path) -> list[dict]:
        """``fedfuse results --out OUT --format json``, in this process (it reads the store only,
        no plugin: a subprocess would cost about 1.5 s of start-up a call)."""
        done = InProcessCLI()("results", "--out", str(out), "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


class InProcessCLI(CLI):
    """``fedfuse`` called in this process, with ``CLI``'s answers (returncode, stdout, stderr):
    for commands that start no process, without paying Python's and torch's start-up each time."""

    def __init__(self):
        super().__init__(Path.cwd())

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        import contextlib
        import io

        from fedfuse.bench.cli.main import main

        from unittest import mock

        out, err = io.StringIO(), io.StringIO()
        with mock.patch.dict(os.environ, COLUMNS="200"), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's refusals
                code = stop.code
        return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def write_suite(path: Path, protocols: str, top: str = "", **matrix: str) -> Path:
    """A small suite file: digits, one seed, 2 clients, 1 round, a membership attack on 32
    images (the default 256 costs every cell a second or two); ``matrix`` values (TOML text,
    e.g. ``rounds="2"``) override those, None leaves a key out; ``top``: top-level keys
    (``profile_files = [...]``)."""
    defaults = {"datasets": '["digits"]', "seeds": "[0]", "clients": "2", "rounds": "1", "mia_samples": "32"}
    keys = {k: v for k, v in {**defaults, **matrix}.items() if v is not None}
    lines = "\n".join(f"{k} = {v}" for k, v in keys.items())
    path.write_text(f'format = 1\n{top}[suite]\nname = "test"\nversion = "1"\n[matrix]\n{lines}\n{protocols}')
    return path


def copy_store(src: Path, dest: Path) -> Path:
    """A writable copy of a results folder (its store and run directories), e.g. of the session's
    shared track run (conftest's ``quick_track``), which tests only read."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.lock"))
    return dest


def make_images(folder, names, size=(12, 10), color=(200, 10, 10)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", size, (color[0] - i, color[1], color[2])).save(folder / name)


SETS = [["Black_Hair"], ["Smiling"], ["Blond_Hair", "Wearing_Earrings"]]


def make_celeba(root, n=40):
    """A CelebA-layout folder: img_align_celeba/*.png and list_attr_celeba.txt (a count line,
    the attribute names, then 'file v1 v2 ...' with -1/1). Image i is black-haired if i % 3 == 0,
    smiling if even, blond if i % 3 == 1, wears earrings unless i % 5 == 0: sets 0 and 1 overlap
    (i % 6 == 0), as do 1 and 2; sets 0 and 2 never; odd i with i % 3 == 2 match no set."""
    names = [f"{i:06d}.png" for i in range(1, n + 1)]
    make_images(root / "img_align_celeba", names, size=(8, 8))
    rows = [name + " " + " ".join(f"{1 if has else -1:2d}" for has in (i % 3 == 0, i % 2 == 0, i % 3 == 1, i % 5 != 0))
            for i, name in enumerate(names)]
    (root / "list_attr_celeba.txt").write_text(f"{n}\nBlack_Hair Smiling Blond_Hair Wearing_Earrings\n"
                                               + "\n".join(rows) + "\n")
    return {"path": str(root), "size": 8}


def matching(data, sets=SETS):
    """(private images, sets) booleans, and the private indices, from the loaded attributes."""
    private = data.private
    return np.stack([np.all([data.attributes[a][private] == 1 for a in s], axis=0) for s in sets], 1), private


PROTOCOLS = ('[[protocols]]\nname = "fedavg-lora"\nconfig = { pretrain_steps = 30, local_steps = 3, model = "tiny" }\n'
             '[[protocols]]\nname = "fedavg-full-finetune"\nconfig = { pretrain_steps = 30, local_steps = 3, model = "tiny" }\n')


DATASET = '[{ name = "digits", public_classes = [0, 1, 2, 3, 4] }]'


BUILT_INS = {"fedavg", "fixed-quant", "ondemand-quant", "fedavg-lora", "fedavg-full-finetune", "split-diffusion",
             "local-only", "centralized"}


def client_round(cell, arrays, partition: int = 0):
    """One real client round through fedfuse's ClientApp (as Flower's engine would call it), its
    reply as the server's grid hands it to the protocol (fedfuse.testing's ClientDriver)."""
    from flwr.app import ConfigRecord, RecordDict

    from fedfuse.testing import ClientDriver

    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    return ClientDriver(cell, partition).send(content, "train", 1)


# One small fedavg cell that several end-to-end tests read (conftest's ``shared_run``): a
# Raspberry Pi and a laptop on LTE, the small UNet, 3 rounds, a quality target every model meets
# (FID scored in rounds 2 and 3), published live to W&B (offline).
MIXED = '[[profiles]]\nname = "mixed"\ndevice = ["raspberry-pi-4", "laptop-cpu"]\nnetwork = "lte"\n'
FEDAVG_MATRIX = dict(rounds="3", samples="16", sample_steps="2", target="{ fid = 1e9 }", eval_every="2",
                     target_samples="16")


def fedavg_labelled(*labels: str) -> str:
    return "".join(f'[[protocols]]\nname = "fedavg"\nlabel = "{label}"\n'
                   'config = { model = "small", local_steps = 2, batch_size = 8 }\n' for label in labels) + MIXED


def fedavg_run(shared_run) -> Path:
    """The shared fedavg cell's output folder (label "free": no deadline)."""
    return shared_run("fedavg-small", **SHARED_RUNS["fedavg-small"])


# Failing and hostile plugins in one run (tests/fixtures/failing-plugin and the template): a
# client that raises, four hostile client replies, and a healthy entry beside them.
HOSTILE_ATTACKS = ("shape", "examples", "scale", "rename")  # NaN: unit/test_reliability.py


FAILING = ('[[protocols]]\nname = "always-fails"\n[[protocols]]\nname = "fedavgm"\n'
           'config = { model = "tiny", local_steps = 2 }\n'
           + "".join(f'[[protocols]]\nname = "hostile"\nlabel = "{a}"\nconfig = {{ attack = "{a}" }}\n'
                     for a in HOSTILE_ATTACKS))


def failing_run(shared_run, plugin_site) -> Path:
    return plugin_run(shared_run, plugin_site, "failing")


def plugin_run(shared_run, plugin_site, name: str) -> Path:
    """The shared run ``name`` of PLUGIN_RUNS (the plugin site on its path)."""
    return shared_run(name, extra_path=[plugin_site], **PLUGIN_RUNS[name])


def plain_run(shared_run, name: str) -> Path:
    """The shared run ``name`` of SHARED_RUNS."""
    return shared_run(name, **SHARED_RUNS[name])


def expect_exit(out: Path, status: str, name: str = "") -> None:
    """Assert that the shared run ``name`` (default: its folder ``out``'s name) ended with
    ``status``, showing its log's end if not."""
    name = name or out.name
    assert (out.parent / f"{name}.rc").read_text() == status, (out.parent / f"{name}.log").read_text()[-3000:]


# The shared runs with the test plugins on the path (tests/fixtures and the template), in a
# process of their own beside SHARED_RUNS' (their plugins stay out of those runs' registry):
# the failing and hostile plugins; the conformance check of a protocol that keeps its state in
# a module global (its runs kept); two seeds of one whose clients keep it in their Context;
# hostile clients dropped or outvoted; and the template entering track-edge-quick (a copy of
# the session's track run), then the track run again (every built-in resumed).
HOSTILE_HANDLED = "".join(f'[[protocols]]\nname = "hostile"\nlabel = "{label}"\nconfig = {{ {config} }}\n' for label, config in
                          (("drop", 'attack = "shape"'), ("median", 'attack = "scale", aggregator = "median"'),
                           ("mean", 'attack = "scale"')))
TEMPLATE_TRACK = ["run", "track-edge-quick", "--out", "{root}/template-track"]
PLUGIN_RUNS = {
    "failing": dict(protocols=FAILING),
    "forgetful": dict(argv=["check", "protocol", "forgetful", "--rounds", "2", "--clients", "2", "--format", "json",
                            "--keep", "{root}/forgetful"]),
    "stateful": dict(protocols='[[protocols]]\nname = "stateful"\n', seeds="[0, 1]", rounds="2"),
    "hostile-handled": dict(protocols=HOSTILE_HANDLED, bad_replies='"drop"', rounds="2", clients="3",
                            max_update_ratio="1e32"),
    "template-track": dict(argv=[*TEMPLATE_TRACK, "--entry", str(ROOT / "examples" / "plugin-template" / "track-entry.toml")],
                           after="quick-track", copy_from="{root}/quick-track"),
    "template-track-again": dict(argv=TEMPLATE_TRACK, after="template-track"),
}


# Split diffusion's cut sweep in one run (share = "subset", share_size 32), per-client cuts, and
# the default share = "batches" at c = 0.4 (batches of 16), which the TLS deployment test runs again to compare.
SPLIT_CONFIG = 'model = "tiny", client_model = "tiny", local_steps = 4, server_steps = 4'
SPLIT_SWEEP = "".join(
    f'[[protocols]]\nname = "split-diffusion"\nlabel = "{label}"\nconfig = {{ {SPLIT_CONFIG}, {extra} }}\n'
    for label, extra in [*((f"c{c}", f'cut_ratio = {c}, share = "subset", share_size = 32') for c in (0.0, 0.2, 0.6, 1.0)),
                         ("mixed", 'cut_ratios = [0.2, 0.6], share = "subset", share_size = 32'),
                         ("batches", "cut_ratio = 0.4, batch_size = 16")])


def split_sweep_run(shared_run) -> Path:
    """The shared split-diffusion sweep's output folder (its suite file: ``split_sweep_suite``)."""
    return shared_run("split-sweep", **SHARED_RUNS["split-sweep"])


def split_sweep_suite(out: Path) -> Path:
    return out.parent / f"{out.name}.toml"  # where shared_run wrote it


# On-demand quantization with demands, fixed 4 bits, and the 2x2's fixed 8 bits at maximum clock,
# with frequency scaling, and with a 4-bit downlink (tests/e2e/test_quantization.py).
QUANT_COMMON = 'model = "tiny", local_steps = 2, bits = 8, deadline_s = 20.0'
QUANT = ('[[protocols]]\nname = "ondemand-quant"\nconfig = { model = "tiny", local_steps = 2, deadline_s = 20.0, '
         'min_bits = [3, 7] }\n[[protocols]]\nname = "fixed-quant"\nlabel = "fixed4"\n'
         'config = { model = "tiny", local_steps = 2, bits = 4 }\n'
         + "".join(f'[[protocols]]\nname = "fixed-quant"\nlabel = "{label}"\nconfig = {{ {QUANT_COMMON}{extra} }}\n'
                   for label, extra in (("max", ""), ("dvfs", ", dvfs = true"), ("down4", ", downlink_bits = 4")))
         + '[[profiles]]\nname = "two"\ndevice = ["raspberry-pi-4", "jetson-nano"]\nnetwork = "wifi"\n')

# Partial participation (tests/e2e/test_participation.py): fedavg and fixed-quant drawing 2 of 4
# clients a round; and fedavg twice (fresh, then in warm actors) under an availability trace.
PARTICIPATION = dict(clients="4", rounds="3", samples="16", sample_steps="2")
TINY_FEDAVG = 'config = { model = "tiny", local_steps = 2, batch_size = 8 }\n'
DRAWN = f'[[protocols]]\nname = "fedavg"\n{TINY_FEDAVG}[[protocols]]\nname = "fixed-quant"\n' \
        'config = { model = "tiny", local_steps = 2, batch_size = 8, bits = 4 }\n'
TRACED = "".join(f'[[protocols]]\nname = "fedavg"\nlabel = "{label}"\n{TINY_FEDAVG}' for label in ("first", "again")) + \
    '[[profiles]]\nname = "traced"\ndevice = "phone-midrange"\nnetwork = "lte"\navailability = { trace = "online.csv" }\n'
ONLINE = "client,first_round,last_round\n0,2,3\n1,9,9\n"  # client 0 in rounds 2-3 only, client 1 never

# fedavg-lora beside full fine-tuning on a public pre-training split, and personalised adapters
# over attention and convolutions (tests/e2e/test_fedavg_lora.py).
PERSONAL = ('[[protocols]]\nname = "fedavg-lora"\nlabel = "personal"\nconfig = { pretrain_steps = 30, local_steps = 3, '
            'model = "tiny", targets = ["attn+conv"], personalize_steps = 3 }\n')

# Split diffusion sharing its training batches, conditioned and guided, beside local-only and
# centralized (tests/e2e/test_split_diffusion.py).
CONDITIONED = ('[[protocols]]\nname = "split-diffusion"\nlabel = "split"\n'
               'config = { model = "tiny", client_model = "tiny", cut_ratio = 0.6, local_steps = 3, batch_size = 8, '
               'server_pool = 40, condition = "label", guidance = 2.0 }\n'
               '[[protocols]]\nname = "local-only"\n'
               'config = { client_model = "tiny", local_steps = 3, batch_size = 8, condition = "label", guidance = 2.0 }\n'
               '[[protocols]]\nname = "centralized"\nconfig = { model = "tiny", local_steps = 3, batch_size = 8, '
               'condition = "label", guidance = 2.0 }\n')  # guided: the two-pass sampler end to end

# A CelebA-layout folder split by attribute sets, as a CollaFuse cell conditioned on an attribute
# (tests/e2e/test_datasets.py; eval_fraction = 0.3: the recall/coverage scores need more held-out
# images than their 5 nearest neighbours).
ATTRIBUTE_CELL = dict(
    protocols='[[protocols]]\nname = "split-diffusion"\nconfig = { model = "tiny", client_model = "tiny", cut_ratio = 0.6, '
              'local_steps = 2, batch_size = 4, timesteps = 20, warmup_steps = 0, condition = "Wearing_Earrings" }\n',
    datasets='[{ name = "image-folder", path = "{root}/celeba", size = 8, label = "Smiling", eval_fraction = 0.3 }]',
    partitioners=f'[{{ name = "attribute-sets", sets = {SETS!r}, max_per_client = 6 }}]'.replace("'", '"'),
    clients="3", samples="16", sample_steps="2", feature_space='"featnet"', prepare=lambda root: make_celeba(root / "celeba"))

# The shared runs that need no plugin, by name (conftest's shared_run arguments: a suite's
# ``protocols`` and matrix values, or a command's ``argv``; ``files``: written beside the suite;
# ``prepare(root)``: makes what the suite reads; ``{root}``: the session's folder). A whole
# end-to-end session runs them one after another in one process as it begins, PLUGIN_RUNS in a
# second, so that no worker waits for another to run one and no run pays its own Ray
# (conftest.start_shared_runs, tests/shared_runs.py).
SHARED_RUNS = {  # trace first: its first cell starts the engine, its second finds the actors warm
    "trace": dict(protocols=TRACED, files={"online.csv": ONLINE}, **PARTICIPATION),
    "conformance": dict(argv=["check", "protocol", "split-diffusion", "--format", "json", "--keep", "{root}/conformance"]),
    "fedavg-small": dict(protocols=fedavg_labelled("free"), cli_args=("--wandb",), **FEDAVG_MATRIX),
    "quant": dict(protocols=QUANT, rounds="2", samples="16", sample_steps="2"),
    "split-sweep": dict(protocols=SPLIT_SWEEP, partitioners='[{ name = "groups", by = "label" }]', samples="32",
                        sample_steps="6"),
    "participation": dict(protocols=DRAWN, participation="0.5", **PARTICIPATION),
    "lora": dict(protocols=PROTOCOLS + PERSONAL, datasets=DATASET, samples="64", sample_steps="5",
                 target="{ fid = 1e9 }", target_samples="16"),
    "conditioned": dict(protocols=CONDITIONED, partitioners='[{ name = "groups", by = "label" }]', rounds="2",
                        samples="16", sample_steps="6",  # fewer samples than x_cut received
                        target="{ fid = 1e9 }", eval_every="2", target_samples="16"),
    "attributes": ATTRIBUTE_CELL,
}
