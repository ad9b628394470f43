"""Results are never lost or corrupted: one writer per output folder, read-only readers, clear
errors for damaged stores and bad seeds, strict JSON, and interruptions that end quickly."""

import errno
import json
import math
import os
import shutil
from pathlib import Path

import pytest
from helpers import write_suite

from fedfuse.bench.suites.cells import CellSpec
from fedfuse.results.outlock import OutputLock, has_writer
from fedfuse.results.store import ResultStore, StoreError


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


def test_a_reply_under_another_record_name_is_named_not_just_refused():
    import numpy as np
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    from fedfuse.bench.engine.rounds import odd_replies
    from fedfuse.testing import SERVER_NODE, as_flower_task

    def reply(name, node):
        content = RecordDict({name: ArrayRecord({"w": Array(np.zeros(3, np.float32))}),
                              "metrics": MetricRecord({"num-examples": 1})})
        message = Message(content, dst_node_id=node, message_type="train")
        message.metadata.__dict__["_src_node_id"] = node  # as if it came from that node
        return message

    with as_flower_task(SERVER_NODE):
        replies = [reply("arrays", 1), reply("weights", 2), reply("arrays", 3)]
    assert odd_replies(replies) == "node 2"


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
        "over the bound of 100 (max_update_ratio = 100)": arrays(w=np.full((4, 3), 1e30, np.float32),
                                                                  b=np.ones(3, np.float32)),
    }
    for message, reply in bad.items():
        with pytest.raises(BadReply, match="client 1") as err:
            check_reply(reply, sent, "client 1")
        assert message in str(err.value)
    # the bound follows the sent model's norm (here 200), and a suite or protocol can move it
    big = arrays(w=np.full((4, 3), 3 * 57.7, np.float32), b=np.zeros(3, np.float32))  # moved 400
    check_reply(big, arrays(w=np.full((4, 3), 57.7, np.float32), b=np.zeros(3, np.float32)), "client 0")
    with pytest.raises(BadReply, match="max_update_ratio = 1"):
        check_reply(big, arrays(w=np.full((4, 3), 57.7, np.float32), b=np.zeros(3, np.float32)), "client 1",
                    max_update_ratio=1)
    with pytest.raises(BadReply, match="over the limit of 1 MiB"):  # custom records: size and finiteness only
        check_reply(RecordDict({"update": ArrayRecord({"x": Array(np.zeros(2**19, np.float32))})}), None, "c", 2**20)


def test_num_examples_and_a_protocols_own_schema_are_checked():
    import numpy as np
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    from fedfuse.bench.engine.validation import BadReply, ReplyPolicy, check_reply
    from fedfuse.protocols.ondemand_quant import server_loop, task
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
    policy = ReplyPolicy(schema=server_loop.check_update, config=OnDemandConfig(block=256))
    policy.check(reply, sent, "client 0", 0)
    short = RecordDict({"update": ArrayRecord({"packed": Array(np.zeros(10, np.uint8)),
                                              "scales": Array(np.zeros((4, 2), np.float32))})})
    with pytest.raises(BadReply, match=r"client 1: 'update' holds .* a 4-bit update of 1000 values"):
        policy.check(short, sent, "client 1", 1)
    from fedfuse.protocols.split_diffusion import replies as split
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


def test_a_damaged_row_or_an_unwritable_out_is_one_line(tmp_path, capsys, monkeypatch):
    import sqlite3

    from fedfuse.bench.cli.main import main

    path = tmp_path / "store" / "results.sqlite"
    store = ResultStore(path)
    cell = CellSpec("hand", "1", "a", "fedavg", "2", {}, "digits", {}, "iid", seed=0)
    store.start(cell, "d", tmp_path)
    store.finish(cell.cell_id, "ok", {"fid": 1.0})
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE cells SET metrics = '{\"fid\": 1.' WHERE cell_id = ?", (cell.cell_id,))
    for command in (["results"], ["leaderboard"], ["publish", "wandb"]):
        assert main([*command, "--out", str(tmp_path / "store")]) == 2
        err = capsys.readouterr().err
        assert f"the record of cell {cell.cell_id} is damaged" in err and "Traceback" not in err
    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n')

    real_mkdir, read_only_fs = Path.mkdir, tmp_path / "ro"

    def read_only(self, *args, **kwargs):  # --out on a read-only filesystem
        if self == read_only_fs or read_only_fs in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["run", str(suite), "--out", str(tmp_path / "ro" / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "Read-only file system" in err and "Traceback" not in err


@pytest.mark.parametrize("matrix,message", [
    ({"clients": "5000"}, "more clients than its 1498 training images"),
    ({"partitioners": '[{ name = "dirichlet", alpha = -1.0 }]'}, "cannot be built"),
    # the partitioner retries, warning at length each time, before it gives up: one line still
    ({"clients": "10", "partitioners": '[{ name = "dirichlet", alpha = 0.01, min_partition_size = 170 }]'},
     "The max number of attempts (10) was reached"),
])
def test_a_suite_whose_data_cannot_be_split_stops_before_writing(tmp_path, capsys, matrix, message):
    import warnings

    from fedfuse.bench.cli.main import main

    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n', **matrix)
    with warnings.catch_warnings(record=True) as caught:  # what a user's terminal would have shown
        warnings.simplefilter("always")
        assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err[-1500:]
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message)[:80] for w in caught]
    assert not (tmp_path / "out").exists()


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
    assert done.returncode == 2 and "seeds must be distinct, >= 0" in done.stderr
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
