"""The leaderboard page in a real headless browser: no console errors, sorting works, plots show."""

import shutil
import subprocess

import pytest
import torch

from fedfuse.bench.metrics.quality import save_grid
from fedfuse.bench.suites.cells import CellSpec
from fedfuse.plugins.manager import registry
from fedfuse.results.store import ResultStore

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--window-size=1366,900", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
                  "--virtual-time-budget=5000"]


FEDAVG_VERSION = registry().get("protocols", "fedavg").version  # cells of the installed version


def hand_made_store(out):
    store = ResultStore(out / "results.sqlite")
    refs = {"ref_fid_real": 1.0, "ref_fid_blur": 90.0, "ref_fid_noise": 200.0, "ref_recall_real": 0.9,
            "ref_recall_blur": 0.1, "ref_recall_noise": 0.0}
    for label, fid, up in (("a", 30.0, 9e6), ("b", 20.0, 5e6), ("c", 40.0, 1e6), ("d", 150.0, 1e5)):
        for seed in (0, 1):
            cell = CellSpec("hand", "1", label, "fedavg", FEDAVG_VERSION, {}, "digits", {}, "iid", {}, seed=seed)
            run_dir = out / "runs" / cell.cell_id
            run_dir.mkdir(parents=True)
            save_grid(torch.rand(16, 1, 8, 8) * 2 - 1, run_dir / "samples.png")
            store.start(cell, "digest", run_dir)
            for rnd in (1, 2):
                store.add_round(cell.cell_id, {"round": rnd, "eval_loss": 1.0 / rnd + seed * 0.01})
            store.finish(cell.cell_id, "ok", {"fid": fid + seed, "bytes_up": up, "energy_j": up / 1e6,
                                               "client_flops": 1e9, "latency_s": 1.0, "feature_space": "x",
                                               "fid_vs_noise": (fid + seed) / 200.0, **refs})


def test_page_loads_sorts_and_shows_plots(cli, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: scripts/test.sh installs it (apt-get install chromium)")
    hand_made_store(tmp_path / "out")
    page = tmp_path / "board.html"
    done = cli("leaderboard", "--out", str(tmp_path / "out"), "--format", "html", "--dest", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # nothing fetched
    assert text.count('<img class="grid"') == 4  # each configuration shows a sample grid, embedded
    assert "pure noise</td><td>200</td>" in text and "real held-out (floor)</td><td>1</td>" in text
    assert '<tr class="unlearned"><td data-v="4">not learned</td><td class="l">d</td>' in text  # last, unranked
    browser = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                              f"file://{page}#selftest"], capture_output=True, text=True, timeout=120)
    assert "selftest sorted plots-visible rows=4 fits" in browser.stdout, browser.stdout[-500:]  # at a laptop's width
    console = [ln for ln in browser.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    order = [text.index(f'<td class="l">{label}</td>') for label in ("b", "a", "c", "d")]
    assert order == sorted(order)  # ranked by FID, lower first
