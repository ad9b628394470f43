"""W&B offline publishing: read the offline run files back and check config, history, summary."""

import glob
import json
import struct

import pytest

pytestmark = pytest.mark.slow


def wandb_records(path: str) -> list:
    """The protobuf records of an offline .wandb file (LevelDB-style log blocks of 32 KiB)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def key(item) -> str:
    return ".".join(item.nested_key) or item.key


def test_offline_runs_hold_config_history_summary_and_keep_their_ids(cli, tmp_path, shared_run):
    """The shared fedavg cell was run with --wandb: published live, once; a copy of its folder is
    published again here."""
    from helpers import copy_store, fedavg_run

    out = copy_store(fedavg_run(shared_run), tmp_path / "out")
    (record,) = cli.results(out)
    assert len(glob.glob(str(out / "wandb" / f"offline-run-*-{record['cell']}"))) == 1
    for _ in range(2):  # publishing twice must not add runs: the ids come from the cell hash
        done = cli("publish", "wandb", "--out", str(out))
        assert done.returncode == 0 and "published 1 cell run(s)" in done.stdout, done.stderr[-2000:]
    files = sorted(glob.glob(str(out / "wandb" / f"offline-run-*-{record['cell']}" / "*.wandb")))
    assert len(files) == 3 and len(glob.glob(str(out / "wandb" / "offline-run-*-fedfuse-leaderboard"))) == 2
    records = wandb_records(files[-1])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_id == record["cell"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    value = lambda v: v["value"] if isinstance(v, dict) and "value" in v else v  # noqa: E731  (both layouts)
    assert value(config["protocol"]) == "fedavg" and value(config["seed"]) == 0
    assert value(config["config"])["local_steps"] == 2
    steps = [r.history.step.num for r in records if r.WhichOneof("record_type") == "history"]
    assert steps[:2] == [1, 2]
    history = [r.history for r in records if r.WhichOneof("record_type") == "history"][0]
    assert {"train_loss", "bytes_up", "per_client.0.bytes_up"} <= {key(i) for i in history.item}
    summary = {key(i): i.value_json for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert float(summary["fid"]) == pytest.approx(record["metrics"]["fid"]) and summary["status"] == '"ok"'
    assert summary["not_learned"] == "true" and float(summary["fid_vs_noise"]) > 0.5  # 2 steps learn nothing
    done = cli("publish", "nowhere", "--out", str(out))
    assert done.returncode == 2 and "no plugin publishes to 'nowhere'" in done.stderr


def test_leaderboard_table_has_ranks_references_and_not_learned_rows():
    import wandb

    from fedfuse.leaderboard.ranking import group, rank
    from fedfuse.leaderboard.wandb_sink import board_table
    from fedfuse.plugins.manager import registry

    def rec(label, seed, fid):
        refs = {"ref_fid_real": 1.0, "ref_fid_blur": 50.0, "ref_fid_noise": 100.0, "ref_recall_real": 0.9,
                "ref_recall_blur": 0.3, "ref_recall_noise": 0.0}
        return {"suite": "s", "suite_version": "1", "suite_digest": "d", "label": label, "dataset": "digits",
                "partitioner": "iid", "profile": "p", "seed": seed, "status": "ok", "evaluation": {},
                "metrics": {"fid": fid, "fid_vs_noise": fid / 100, "pop_fid": fid + 1, "system": "cpu x 32-true", **refs}}

    specs = {name: e.spec for name, e in registry().entries("metrics").items()}
    rows = rank(group([rec("a", 0, 10.0), rec("a", 1, 11.0), rec("b", 0, 80.0)], {}, {}), specs)
    table = board_table(wandb, rows)
    ranks = [row[table.columns.index("rank")] for row in table.data]
    configs = [row[table.columns.index("configuration")] for row in table.data]
    assert ranks == ["1", "not learned", "reference", "reference", "reference"]
    assert configs[2:] == ["reference: real", "reference: blur", "reference: noise"]
    assert table.data[0][table.columns.index("system")] == "cpu x 32-true"
    assert table.data[0][table.columns.index("pop_fid")] == 11.5  # population quality beside client quality
    assert table.data[0][table.columns.index("ranked_by")] == "fid"  # what the rank is by (a track's primary)
    assert table.data[0][table.columns.index("ranked_value")] == table.data[0][table.columns.index("fid")]
