"""Results are never lost or corrupted: one writer per output folder, read-only readers, clear
errors for damaged stores and bad seeds, strict JSON, and interruptions that end quickly."""

import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
from helpers import expect_exit, write_suite

from fedfuse.results.outlock import has_writer

FEDAVG = '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = 2 }\n'


SLOW_CELL = '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = LOCAL }\n'


def start_run(tmp_path, out, local_steps: int, *extra: str, first_a_fast_cell: bool = False) -> subprocess.Popen:
    entries = SLOW_CELL.replace("LOCAL", str(local_steps))
    if first_a_fast_cell:  # a cell that ends ok before the slow one starts
        entries = SLOW_CELL.replace("LOCAL", "2").replace('"fedavg"\n', '"fedavg"\nlabel = "fast"\n') + entries
    suite = write_suite(tmp_path / "s.toml", entries, rounds="3", samples="16", sample_steps="2")
    return subprocess.Popen([sys.executable, "-m", "fedfuse.bench.cli", "run", str(suite), "--out", str(out), *extra],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_in_training(proc, out, sig, cells: int = 1) -> tuple[str, float]:
    """Wait until the ``cells``-th cell's clients train (Flower logs the round's first message
    in the cell's log), then signal."""
    deadline = time.time() + 180
    while time.time() < deadline and not training(out, cells):
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(sig)
    sent = time.time()
    _, stderr = proc.communicate(timeout=60)
    return stderr, time.time() - sent


def training(out, cells: int) -> bool:
    logs = sorted(out.glob("runs/*/cell.log"), key=lambda p: p.stat().st_mtime)
    return len(logs) >= cells and "configure_train" in logs[-1].read_text()


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_ends_quickly_and_marks_its_cell(cli, tmp_path, sig, code):
    """And results.sqlite alone, copied away after the exit (no log beside it), holds the cell
    that ended ok before the interruption."""
    out = tmp_path / "out"
    proc = start_run(tmp_path, out, 400, first_a_fast_cell=True)
    stderr, waited = stop_in_training(proc, out, sig, cells=2)
    assert proc.returncode == code and waited < 20, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "finished cells are kept" in stderr
    assert {r["label"]: r["status"] for r in cli.results(out)} == {"fast": "ok", "fedavg": "interrupted"}
    assert not has_writer(out)
    (tmp_path / "alone").mkdir()
    shutil.copyfile(out / "results.sqlite", tmp_path / "alone" / "results.sqlite")
    assert {r["label"]: r["status"] for r in cli.results(tmp_path / "alone")} == {"fast": "ok", "fedavg": "interrupted"}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.long), signal.SIGKILL])
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
    started = psutil.Process(proc.pid).children(recursive=True)  # Ray's processes (agents too), the reaper
    proc.send_signal(sig)
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(started, timeout=20)  # none outlives the run, SIGKILL included
    assert not alive, [(p.pid, p.name()) for p in alive]
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


@pytest.mark.slow
def test_cells_share_warm_actors_but_never_client_state(plugin_cli, plugin_site, shared_run):
    """Two seeds of the fixture ``stateful`` (helpers.PLUGIN_RUNS["stateful"])."""
    from helpers import plugin_run

    out = plugin_run(shared_run, plugin_site, "stateful")
    expect_exit(out, "0")
    first, second = (r["metrics"] for r in sorted(plugin_cli.results(out), key=lambda r: r["seed"]))
    for m in (first, second):  # each cell's clients start with an empty Context: 2 rounds, 2 messages each
        assert (m["seen_first"], m["seen_last"]) == (1, 2)
    assert {second["pid_low"], second["pid_high"]} & {first["pid_low"], first["pid_high"]}  # an actor was reused
    assert second["engine_reused"] == 1.0


@pytest.mark.slow
def test_hostile_clients_fail_their_cell_by_name_or_are_dropped(plugin_cli, plugin_site, shared_run):
    """The shared run of failing and hostile plugins (helpers.failing_run), then one with
    bad_replies = "drop" and a robust aggregator (helpers.HOSTILE_HANDLED)."""
    from helpers import HOSTILE_ATTACKS, failing_run, plugin_run

    records = plugin_cli.results(failing_run(shared_run, plugin_site))
    errors = {r["label"]: r["error"] for r in records if r["label"] in HOSTILE_ATTACKS}
    assert errors["shape"].startswith("BadReply: client 1 (node") and "has shape (3, 4)" in errors["shape"]
    assert "client 1" in errors["examples"] and "num-examples" in errors["examples"]
    # every weight x 1e30: finite, so only its size gives it away; the honest client is never named
    assert errors["scale"].startswith("BadReply: client 1 (node") and "max_update_ratio" in errors["scale"]
    assert errors["rename"].startswith("ClientFailure: client 1 (node") and "unlike the others'" in errors["rename"]
    assert not any("client 0" in e for e in errors.values())
    # Three clients, the update bound lifted: "drop" leaves the bad client out; a robust aggregator
    # (coordinate-wise median) outvotes a x1e30 client that the plain mean takes in.
    out = plugin_run(shared_run, plugin_site, "hostile-handled")
    expect_exit(out, "0")
    records = {r["label"]: r for r in plugin_cli.results(out)}
    assert records["drop"]["metrics"]["w_mean"] == 2.0  # the honest clients' updates alone, two rounds of +1
    assert [r["per_client"]["1"].get("dropped") for r in records["drop"]["rounds"]] == [1, 1]
    assert "dropped" not in records["drop"]["rounds"][0]["per_client"]["0"]
    assert records["median"]["metrics"]["w_mean"] == 2.0
    assert records["mean"]["metrics"]["w_mean"] > 1e28  # the same client, averaged in


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


ORPHAN_MAKER = """
import subprocess, sys, time
from fedfuse.bench.cli.reaper import reap_on_exit
reap_on_exit()
child = subprocess.Popen(["sleep", "300"], start_new_session=True)  # as deploy local starts Flower's
print(child.pid, flush=True)
time.sleep(300)
"""


def test_what_a_killed_command_started_ends_and_nothing_else():
    """The reaper ends what the command started, in a session of its own too, once the command is
    SIGKILLed; a process it did not start (this one's sleep) is left alone."""
    bystander = subprocess.Popen(["sleep", "300"])
    command = subprocess.Popen([sys.executable, "-c", ORPHAN_MAKER], stdout=subprocess.PIPE, text=True)
    started = psutil.Process(int(command.stdout.readline()))
    command.kill()
    command.wait(timeout=10)
    gone, _ = psutil.wait_procs([started], timeout=15)
    assert gone and bystander.poll() is None
    bystander.kill()
