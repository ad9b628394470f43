"""Results are never lost or corrupted: one writer per output folder, read-only readers, clear
errors for damaged stores and bad seeds, strict JSON, and interruptions that end quickly."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import write_suite

from fedfuse.results.outlock import OutputLock, has_writer
from fedfuse.bench.suites.cells import CellSpec
from fedfuse.results.store import ResultStore, StoreError

FEDAVG = '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = 2 }\n'


def test_a_second_run_on_a_held_folder_fails_at_once_naming_the_holder(cli, tmp_path):
    out = tmp_path / "out"
    suite = write_suite(tmp_path / "s.toml", FEDAVG)
    with OutputLock(out):
        assert has_writer(out)
        done = cli("run", str(suite), "--out", str(out))
    assert done.returncode == 2 and "another fedfuse run writes to" in done.stderr
    assert f"pid {os.getpid()}" in done.stderr and done.stderr.count("\n") == 1
    assert not (out / "results.sqlite").exists()
    assert not has_writer(out)  # released with its holder


def test_damaged_or_empty_stores_are_one_line_and_left_untouched(cli, tmp_path):
    for content in (b"", b"this is not sqlite" * 100):
        out = tmp_path / f"out{len(content)}"
        out.mkdir()
        (out / "results.sqlite").write_bytes(content)
        for command in (["results"], ["leaderboard"]):
            done = cli(*command, "--out", str(out))
            assert done.returncode == 2 and "damaged or not a fedfuse results store" in done.stderr, done.stderr
            assert done.stderr.count("\n") == 1
        assert (out / "results.sqlite").read_bytes() == content  # a reader never writes


@pytest.mark.parametrize("seeds", ["[0, 0]", "[-1]"])
def test_duplicate_or_negative_seeds_are_config_errors(cli, tmp_path, seeds):
    done = cli("run", str(write_suite(tmp_path / "s.toml", FEDAVG, seeds=seeds)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "seeds must be distinct and >= 0" in done.stderr
    assert not (tmp_path / "out").exists()


def hand_made(out, status_metrics):
    store = ResultStore(out / "results.sqlite")
    for seed, (status, metrics) in enumerate(status_metrics):
        cell = CellSpec("hand", "1", "a", "fedavg", "2", {}, "digits", {}, "iid", seed=seed)
        store.start(cell, "digest", out / "runs" / cell.cell_id)
        if status != "running":
            store.finish(cell.cell_id, status, metrics)
    store.close()


def test_json_is_strict_and_abandoned_cells_read_as_interrupted(cli, tmp_path):
    out = tmp_path / "out"
    hand_made(out, [("ok", {"fid": math.nan, "bytes_up": 1.0}), ("running", {})])

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    done = cli("results", "--out", str(out), "--format", "json")
    records = json.loads(done.stdout, parse_constant=refuse)
    assert records[0]["metrics"]["fid"] is None and records[0]["metrics"]["bytes_up"] == 1.0
    assert records[1]["status"] == "interrupted" and "process running it ended" in records[1]["error"]
    board = cli("leaderboard", "--out", str(out), "--format", "json")
    assert board.returncode == 0 and json.loads(board.stdout, parse_constant=refuse)


SLOW_CELL = '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = LOCAL }\n'


def start_run(tmp_path, out, local_steps: int, *extra: str) -> subprocess.Popen:
    suite = write_suite(tmp_path / "s.toml", SLOW_CELL.replace("LOCAL", str(local_steps)), rounds="3",
                        samples="16", sample_steps="2")
    return subprocess.Popen([sys.executable, "-m", "fedfuse.bench.cli", "run", str(suite), "--out", str(out), *extra],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_in_training(proc, out, sig) -> tuple[str, float]:
    """Wait until the cell has started (then Flower starts and clients train), then signal."""
    deadline = time.time() + 180
    while time.time() < deadline and not list(out.glob("runs/*/cell.log")):
        time.sleep(0.5)
    time.sleep(10)
    proc.send_signal(sig)
    sent = time.time()
    _, stderr = proc.communicate(timeout=60)
    return stderr, time.time() - sent


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_ends_quickly_and_marks_its_cell(cli, tmp_path, sig, code):
    out = tmp_path / "out"
    proc = start_run(tmp_path, out, 400)
    stderr, waited = stop_in_training(proc, out, sig)
    assert proc.returncode == code and waited < 20, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "finished cells are kept" in stderr
    (record,) = cli.results(out)
    assert record["status"] == "interrupted"
    assert not has_writer(out)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.long), signal.SIGTERM, signal.SIGKILL])
def test_a_rerun_cut_off_keeps_the_previous_ok_result(cli, tmp_path, sig):
    """And results.sqlite alone, copied away after the exit (no log beside it), holds it too."""
    out = tmp_path / "out"
    assert start_run(tmp_path, out, 2).wait(timeout=300) == 0
    (before,) = cli.results(out)
    grid = (out / "runs" / before["cell"] / "samples.png").read_bytes()
    proc = start_run(tmp_path, out, 2, "--rerun")
    deadline = time.time() + 180  # cut the rerun off once its first round is stored
    while time.time() < deadline and not (out / "runs" / f"{before['cell']}.previous").is_dir():
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    (after,) = cli.results(out)  # read-only: the ok result, whatever the store's row says now
    assert after["status"] == "ok" and after["metrics"] == before["metrics"] and after["rounds"] == before["rounds"]
    (tmp_path / "alone").mkdir()
    shutil.copyfile(out / "results.sqlite", tmp_path / "alone" / "results.sqlite")
    (alone,) = cli.results(tmp_path / "alone")
    assert alone["status"] == "ok" and alone["metrics"] == before["metrics"]
    again = cli("run", str(tmp_path / "s.toml"), "--out", str(out))  # restores, then skips the ok cell
    assert again.returncode == 0 and "already ok" in again.stderr
    assert (out / "runs" / before["cell"] / "samples.png").read_bytes() == grid
    assert not (out / "runs" / f"{before['cell']}.previous").exists()


def test_a_store_at_rest_is_one_file_and_readers_create_none(tmp_path):
    path = tmp_path / "results.sqlite"
    store = ResultStore(path)
    cell = CellSpec("hand", "1", "a", "fedavg", "2", {}, "digits", {}, "iid", seed=0)
    store.start(cell, "d", tmp_path)
    store.finish(cell.cell_id, "ok", {"fid": 1.0})
    (tmp_path / "alone").mkdir()
    shutil.copyfile(path, tmp_path / "alone" / "results.sqlite")  # mid-run: the file alone holds the ok cell
    assert ResultStore(tmp_path / "alone" / "results.sqlite", readonly=True).records()[0]["status"] == "ok"
    assert [p.name for p in (tmp_path / "alone").iterdir()] == ["results.sqlite"]  # the reader wrote nothing
    live = ResultStore(path, readonly=True)  # a reader of the live store sees it through the log
    assert live.records()[0]["metrics"] == {"fid": 1.0}
    live.close()
    store.close()
    assert sorted(p.name for p in tmp_path.glob("results.sqlite*")) == ["results.sqlite"]


def test_a_store_of_a_newer_schema_is_refused_with_both_versions(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultStore(path).close()
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    for readonly in (True, False):
        with pytest.raises(StoreError, match="schema version 99; this fedfuse reads version 1"):
            ResultStore(path, readonly=readonly)


def test_replies_are_checked_before_use():
    import numpy as np
    from flwr.app import Array, ArrayRecord, RecordDict

    from fedfuse.bench.engine.validation import BadReply, check_reply

    def arrays(**named):
        return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in named.items()})})

    sent = arrays(w=np.zeros((4, 3), np.float32), b=np.zeros(3, np.float32))
    check_reply(arrays(w=np.ones((4, 3), np.float32), b=np.ones(3, np.float32)), sent, "client 0")  # fine
    bad = {
        "has shape (3,) and dtype float32; the server sent (4, 3)": arrays(w=np.ones(3, np.float32), b=np.ones(3, np.float32)),
        "non-finite values": arrays(w=np.full((4, 3), np.nan, np.float32), b=np.ones(3, np.float32)),
        "missing keys ['b']": arrays(w=np.ones((4, 3), np.float32)),
        "dtype float64": arrays(w=np.ones((4, 3)), b=np.ones(3, np.float32)),
    }
    for message, reply in bad.items():
        with pytest.raises(BadReply, match="client 1") as err:
            check_reply(reply, sent, "client 1")
        assert message in str(err.value)
    with pytest.raises(BadReply, match="over the limit of 1 MiB"):  # custom records: size and finiteness only
        check_reply(RecordDict({"update": ArrayRecord({"x": Array(np.zeros(2**19, np.float32))})}), None, "c", 2**20)


def test_num_examples_and_a_protocols_own_schema_are_checked():
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    from fedfuse.bench.engine.validation import BadReply, ReplyPolicy, check_reply
    from fedfuse.protocols.ondemand_quant import server_app, task
    from fedfuse.protocols.ondemand_quant.plugin import OnDemandConfig

    def examples(n):
        return RecordDict({"metrics": MetricRecord({"num-examples": n})})

    check_reply(examples(100), None, "client 0", max_examples=100)
    for n in (0, 101, 2.5, -3):
        with pytest.raises(BadReply, match=r"client 1: 'metrics/num-examples' is"):
            check_reply(examples(n), None, "client 1", max_examples=100)
    sent = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(1000, np.float32))}),
                       "config": ConfigRecord({"server-round": 1, "bits": 4})})
    good = task.update_schema(1000, 4, 256)
    reply = RecordDict({"update": ArrayRecord({k: Array(np.zeros(s, np.dtype(d))) for k, (s, d) in good.items()})})
    policy = ReplyPolicy(schema=server_app.check_update, config=OnDemandConfig(block=256))
    policy.check(reply, sent, "client 0", 0)
    short = RecordDict({"update": ArrayRecord({"packed": Array(np.zeros(10, np.uint8)),
                                              "scales": Array(np.zeros((4, 2), np.float32))})})
    with pytest.raises(BadReply, match=r"client 1: 'update' holds .* a 4-bit update of 1000 values"):
        policy.check(short, sent, "client 1", 1)
    from fedfuse.protocols.split_diffusion import server_app as split
    from fedfuse.protocols.split_diffusion.plugin import SplitConfig

    policy = ReplyPolicy(schema=split.check_shared, config=SplitConfig(share="subset", share_size=8))
    cut = RecordDict({"config": ConfigRecord({"round": 1})})
    policy.check(RecordDict({"shared": ArrayRecord({"x_cut": Array(np.zeros((8, 1, 8, 8), np.float32))})}), cut, "c0", 0)
    with pytest.raises(BadReply, match=r"client 1: 'shared/x_cut' is \(9, 1, 8, 8\) float32; expected 8"):
        policy.check(RecordDict({"shared": ArrayRecord({"x_cut": Array(np.zeros((9, 1, 8, 8), np.float32))})}),
                     cut, "client 1", 1)
    # share = "batches": one image per trained example, and one condition per image
    policy = ReplyPolicy(schema=split.check_shared, config=SplitConfig(local_steps=2, batch_size=4, condition="label"))
    x_cut = Array(np.zeros((8, 1, 8, 8), np.float32))
    policy.check(RecordDict({"shared": ArrayRecord({"x_cut": x_cut, "cond": Array(np.zeros(8, np.int64))})}), cut, "c0", 0)
    with pytest.raises(BadReply, match=r"client 1: 'shared/cond' has shape \(7,\); expected \(8,\)"):
        policy.check(RecordDict({"shared": ArrayRecord({"x_cut": x_cut, "cond": Array(np.zeros(7, np.int64))})}),
                     cut, "client 1", 1)
    with pytest.raises(BadReply, match=r"client 1: 'shared/cond' is missing; the models are conditioned"):
        policy.check(RecordDict({"shared": ArrayRecord({"x_cut": x_cut})}), cut, "client 1", 1)


@pytest.mark.slow
def test_cells_share_warm_actors_but_never_client_state(plugin_cli, tmp_path):
    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "stateful"\n', seeds="[0, 1]", rounds="2")
    done = plugin_cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = (r["metrics"] for r in sorted(plugin_cli.results(tmp_path / "out"), key=lambda r: r["seed"]))
    for m in (first, second):  # each cell's clients start with an empty Context: 2 rounds, 2 messages each
        assert (m["seen_first"], m["seen_last"]) == (1, 2)
    assert {second["pid_low"], second["pid_high"]} & {first["pid_low"], first["pid_high"]}  # an actor was reused
    assert second["engine_reused"] == 1.0


def test_a_clients_process_cache_is_per_flower_run():
    from flwr.app import Context, RecordDict

    from fedfuse.bench.engine.services import RUN_CONFIG_KEY, client_run
    from fedfuse.bench.suites.cells import CellSpec

    cell = CellSpec("s", "1", "a", "fedavg", "1", {}, "digits", {}, "iid", clients=2)

    def context(run_id: int) -> Context:
        return Context(run_id=run_id, node_id=1, state=RecordDict(), run_config={RUN_CONFIG_KEY: cell.to_json()},
                       node_config={"partition-id": 0, "num-partitions": 2})

    first = client_run(context(1))
    first.cache["model"] = "fine-tuned in run 1"
    assert client_run(context(1)) is first  # the same run: kept between its messages
    assert client_run(context(2)).cache == {}  # a warm actor serving the cell again starts afresh


@pytest.mark.slow
def test_hostile_clients_fail_their_cell_by_name_or_are_dropped(plugin_cli, tmp_path):
    attacks = "".join(f'[[protocols]]\nname = "hostile"\nlabel = "{a}"\nconfig = {{ attack = "{a}" }}\n'
                      for a in ("shape", "examples"))  # NaN: test_replies_are_checked_before_use
    done = plugin_cli("run", str(write_suite(tmp_path / "fail.toml", attacks)), "--out", str(tmp_path / "fail"))
    assert done.returncode == 1
    errors = {r["label"]: r["error"] for r in plugin_cli.results(tmp_path / "fail")}
    assert errors["shape"].startswith("BadReply: client 1 (node") and "has shape (3, 4)" in errors["shape"]
    assert "client 1" in errors["examples"] and "num-examples" in errors["examples"]
    drop = write_suite(tmp_path / "drop.toml", '[[protocols]]\nname = "hostile"\nconfig = { attack = "shape" }\n',
                       bad_replies='"drop"', rounds="2")
    done = plugin_cli("run", str(drop), "--out", str(tmp_path / "drop"))
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = plugin_cli.results(tmp_path / "drop")
    assert record["metrics"]["w_mean"] == 2.0  # client 0's update alone, two rounds of +1
    assert [r["per_client"]["1"].get("dropped") for r in record["rounds"]] == [1, 1]
    assert "dropped" not in record["rounds"][0]["per_client"]["0"]


@pytest.mark.parametrize("matrix,message", [
    ({"clients": "5000"}, "more clients than its 1498 training images"),
    ({"partitioners": '[{ name = "dirichlet", alpha = -1.0 }]'}, "cannot be built"),
])
def test_a_suite_whose_data_cannot_be_split_stops_before_writing(cli, tmp_path, matrix, message):
    done = cli("run", str(write_suite(tmp_path / "s.toml", FEDAVG, **matrix)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr[-1500:]
    assert not (tmp_path / "out").exists()


SWALLOWER = """
import pathlib, sys, time
from fedfuse.bench.cli.common import stop_on_signals
stop_on_signals(lambda: pathlib.Path(sys.argv[1]).write_text("settled"))
while True:  # like a library that catches the interrupt while it starts, and carries on
    try:
        print("ready", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        pass
"""


@pytest.mark.parametrize("signals", [1, 2])
def test_an_interrupt_that_is_swallowed_still_ends_the_run(tmp_path, signals):
    """The watchdog ends it UNWIND_S after the signal; a second signal ends it at once."""
    from fedfuse.bench.cli.common import UNWIND_S

    marker = tmp_path / "settled"
    proc = subprocess.Popen([sys.executable, "-c", SWALLOWER, str(marker)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    started = time.time()
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
    assert proc.wait(timeout=UNWIND_S + 30) == 130
    took = time.time() - started
    assert marker.read_text() == "settled"
    assert (took < UNWIND_S) if signals == 2 else (took >= UNWIND_S)


def test_clients_read_the_partitions_the_driver_saved_and_only_their_cells(tmp_path):
    """The driver writes the cell's partitions to its run directory (10,000 clients take seconds
    to partition); a ClientApp that sees the directory reads them instead of partitioning again."""
    import dataclasses

    import numpy as np
    from flwr.app import Context, RecordDict

    from fedfuse.bench.engine.services import PARTITIONS_FILE, RUN_CONFIG_KEY, RUN_DIR_KEY, client_run
    from fedfuse.bench.suites.cells import CellSpec, cell_partitions, partition_file_key
    from fedfuse.datasets.partition import save_partitions

    cell = CellSpec("s", "1", "a", "fedavg", "1", {}, "digits", {}, "iid", clients=3)
    marked = [p[:5] for p in cell_partitions(cell)]  # unlike the computed ones: shows where a client's came from
    save_partitions(tmp_path / PARTITIONS_FILE, marked, partition_file_key(cell))

    def client_indices(cell: CellSpec, run_id: int) -> np.ndarray:
        context = Context(run_id=run_id, node_id=2, state=RecordDict(), node_config={"partition-id": 1, "num-partitions": 3},
                          run_config={RUN_CONFIG_KEY: cell.to_json(), RUN_DIR_KEY: str(tmp_path)})
        return client_run(context).data.indices.numpy()

    assert np.array_equal(client_indices(cell, 11), marked[1])
    other = dataclasses.replace(cell, seed=1)  # a stale file, saved for another cell, is not used
    assert np.array_equal(client_indices(other, 12), cell_partitions(other)[1])
    assert len(cell_partitions(other)[1]) > 5
