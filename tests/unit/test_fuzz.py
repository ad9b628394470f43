"""Every input ends in exit 0 or one line with exit 2, and nothing is written before a refusal:
generated suite values and ``--set`` strings, data folders and damaged stores (hypothesis).
The examples each test draws are few enough for CI (60, the same every run);
FEDFUSE_FUZZ_RANDOM=1 FEDFUSE_FUZZ_EXAMPLES=1500 explores further."""

import os
import shutil
import sqlite3
import string

import pytest
from helpers import make_images, write_suite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedfuse.bench.cli.main import main
from fedfuse.bench.suites.parse import MATRIX_KEYS
from fedfuse.datasets import DatasetError
from fedfuse.datasets.folders import load_image_folder
from fedfuse.results.store import ResultStore, StoreError

#: CI draws the same 60 examples every run (a red CI is a change's doing, not chance's); explore
#: with FEDFUSE_FUZZ_RANDOM=1 FEDFUSE_FUZZ_EXAMPLES=1500
FUZZ = settings(max_examples=int(os.environ.get("FEDFUSE_FUZZ_EXAMPLES", 60)), deadline=None,
                derandomize=os.environ.get("FEDFUSE_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.function_scoped_fixture])

#: TOML values of every kind, the odd ones included (nan, inf, huge, empty, nested)
toml_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "-0.0", "0.5", "true", "false", '""', "[]", "{}", "[[]]",
                     '"drop"', '"ddpm"', "[0, 0]", "[-1]", '{ fid = nan }', '[{ name = "iid" }]', "1_000"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=string.printable, max_size=20),
)


def one_line_refusal(capsys, out) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("fedfuse: error:"), err[-2000:]
    assert not out.exists()


@FUZZ
@given(key=st.sampled_from(sorted(MATRIX_KEYS) + ["fedavg.local_steps", "fedavg.model", "nope", "fedavg.lr"]),
       value=toml_values)
def test_any_set_value_is_one_line_and_writes_nothing(tmp_path_factory, capsys, key, value):
    """``--only`` matches no cell, so a value that passes every check ends in that refusal."""
    tmp = tmp_path_factory.mktemp("set")
    suite = write_suite(tmp / "s.toml", '[[protocols]]\nname = "fedavg"\n')
    out = tmp / "out"
    assert main(["run", str(suite), "--out", str(out), "--set", f"{key}={value}", "--only", "no-such-cell"]) == 2
    one_line_refusal(capsys, out)


@FUZZ
@given(key=st.sampled_from(sorted(MATRIX_KEYS)), value=toml_values)
def test_any_suite_value_is_one_line_and_writes_nothing(tmp_path_factory, capsys, key, value):
    tmp = tmp_path_factory.mktemp("suite")
    out = tmp / "out"
    suite = write_suite(tmp / "s.toml", '[[protocols]]\nname = "fedavg"\n', **{key: value})
    assert main(["run", str(suite), "--out", str(out), "--only", "no-such-cell"]) == 2
    one_line_refusal(capsys, out)


@FUZZ
@given(csv=st.text(alphabet=string.printable, max_size=120), size=st.integers(-5, 70), channels=st.integers(-1, 5),
       broken=st.binary(max_size=64))
def test_any_image_folder_loads_or_is_one_dataset_error(tmp_path_factory, monkeypatch, csv, size, channels, broken):
    tmp = tmp_path_factory.mktemp("folder")
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp / "cache"))
    make_images(tmp / "d" / "a", ["0.png", "1.png", "2.png"])
    make_images(tmp / "d" / "b", ["3.png", "4.png"])
    (tmp / "d" / "b" / "5.png").write_bytes(broken)
    if csv:
        (tmp / "d" / "labels.csv").write_text(csv)
    try:
        data = load_image_folder(str(tmp / "d"), size=size, channels=channels, skip_unreadable=True, eval_fraction=0.3)
    except DatasetError as err:
        assert "\n" not in str(err)
    else:
        assert data.image_shape == (channels, size, size)


@pytest.fixture(scope="module")
def a_store(tmp_path_factory):
    from fedfuse.bench.suites.cells import CellSpec

    path = tmp_path_factory.mktemp("store") / "results.sqlite"
    store = ResultStore(path)
    for seed in range(3):
        cell = CellSpec("s", "1", "a", "fedavg", "2", {}, "digits", {}, "iid", seed=seed)
        store.start(cell, "d", path.parent)
        store.add_round(cell.cell_id, {"round": 1, "train_loss": 0.5})
        store.finish(cell.cell_id, "ok", {"fid": 10.0 + seed})
    store.close()
    return path


@FUZZ
@given(offset=st.integers(0, 2**16), junk=st.binary(min_size=1, max_size=64),
       column=st.sampled_from(["metrics", "spec", "data", "status", "seed", "started"]), value=toml_values)
def test_a_damaged_store_reads_or_is_one_store_error(a_store, tmp_path_factory, offset, junk, column, value):
    tmp = tmp_path_factory.mktemp("damaged")
    for how in ("bytes", "row"):
        copy = tmp / how / "results.sqlite"
        copy.parent.mkdir()
        shutil.copyfile(a_store, copy)
        if how == "bytes":
            data = bytearray(copy.read_bytes())
            data[offset % len(data):offset % len(data) + len(junk)] = junk
            copy.write_bytes(bytes(data[:len(copy.read_bytes())]))
        else:
            with sqlite3.connect(copy) as db:
                db.execute(f"UPDATE cells SET {column} = ? WHERE seed = 1", (value,))
        try:
            records = ResultStore(copy, readonly=True).records()
        except StoreError as err:
            assert "\n" not in str(err)
        else:
            assert len(records) <= 3
