"""`fedfuse submit` and `fedfuse verify` on the shared run of the failing and hostile plugins
(helpers.failing_run: one ok cell, the template's fedavgm, beside failed ones): an untouched
bundle verifies; an edited metric, an edited plugin file and a different track each fail with a
line naming what differs."""

import json
import shutil
import sqlite3

import pytest
from helpers import CLI, failing_run

pytestmark = pytest.mark.slow


@pytest.fixture
def bundle(plugin_cli, plugin_site, shared_run, tmp_path):
    done = plugin_cli("submit", "--out", str(failing_run(shared_run, plugin_site)), "--dest", str(tmp_path / "bundle"))
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp_path / "bundle"


def differs(done) -> list[str]:
    return [line.removeprefix("differs: ") for line in done.stdout.splitlines() if line.startswith("differs: ")]


def test_an_untouched_bundle_verifies_and_its_rows_are_marked(plugin_cli, bundle, tmp_path):
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert "distribution fedfuse-fedavgm" in manifest["protocols"]["fedavgm"]["plugin"]
    assert len(manifest["protocols"]["fedavgm"]["files_sha256"]) == 64 and manifest["fedfuse"]["version"]
    done = plugin_cli("verify", str(bundle), "--cells", "1", timeout=900)  # the one ok cell, run again
    assert done.returncode == 0 and "verified" in done.stdout and not differs(done), done.stdout + done.stderr[-2000:]
    verdict = json.loads((bundle / "verification.json").read_text())
    assert verdict["ok"] and len(verdict["cells"]) == 1 and verdict["machine"]["device"] == "cpu"
    board = json.loads(plugin_cli("leaderboard", "--out", str(bundle), "--format", "json").stdout)
    assert {r["label"]: r["verified"] for r in board if r["label"] in ("fedavgm", "always-fails")} == \
        {"fedavgm": True, "always-fails": False}


def test_an_edited_metric_plugin_file_or_track_fails_with_what_differs(plugin_cli, plugin_site, bundle, tmp_path):
    shutil.copyfile(bundle / "results.sqlite", tmp_path / "as-bundled.sqlite")
    with sqlite3.connect(bundle / "results.sqlite") as db:  # a row made to look better by hand
        cell, metrics = db.execute("SELECT cell_id, metrics FROM cells WHERE status = 'ok'").fetchone()
        db.execute("UPDATE cells SET metrics = ? WHERE cell_id = ?", (json.dumps({**json.loads(metrics), "fid": 1.5}), cell))
    done = plugin_cli("verify", str(bundle), "--cells", "1", timeout=900)
    assert done.returncode == 1
    lines = differs(done)
    assert "results.sqlite differs from the one bundled (edited after `fedfuse submit`)" in lines
    assert any(line.startswith(f"cell {cell} (fedavgm): fid is 1.5 in the bundle, ") for line in lines), lines
    shutil.copyfile(tmp_path / "as-bundled.sqlite", bundle / "results.sqlite")  # each check alone from here
    site = tmp_path / "site"
    shutil.copytree(plugin_site, site)
    with open(site / "fedfuse_fedavgm" / "server_loop.py", "a") as f:
        f.write("# changed after the run\n")
    done = CLI(tmp_path, [site])("verify", str(bundle), "--cells", "0")
    assert done.returncode == 1 and differs(done)[0].startswith("protocol fedavgm: its installed files differ"), done.stdout
    manifest = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**manifest, "suite": "track-edge-quick"}))
    done = CLI(tmp_path, [plugin_site])("verify", str(bundle), "--cells", "0")
    assert done.returncode == 1 and differs(done) == [
        f"a different track: track-edge-quick here is not the suite the bundle ran (digest "
        f"{done.stdout.split('(digest ')[1][:12]} here, {manifest['suite_digest'][:12]} in the bundle)"]
