"""Reference points: what a quality number is worth on this data, in this feature space, at
this sample count. Three rows, computed by the same code as every cell's score:

- ``real``  — n real training images against the held-out set: the floor a perfect model reaches;
- ``blur``  — those images blurred with a Gaussian of sigma = 1 pixel;
- ``noise`` — uniform noise: what an untrained model's samples score.

A cell stores ``ref_fid_<row>``, ``ref_recall_<row>``, ``fid_vs_noise = fid / ref_fid_noise``
and ``ref_separation = ref_fid_noise / ref_fid_real``; the leaderboard marks cells *not
learned* and feature spaces unusable from them (fedfuse.leaderboard.ranking). Cached on disk
(they depend only on the data, the space, the class subset and n) and per process.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

from fedfuse.bench.metrics.calibrate import gaussian_blur
from fedfuse.bench.metrics.quality import score
from fedfuse.files import write_atomic

ROWS = ("real", "blur", "noise")
REFERENCE_SEED = 11


def reference_images(train: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """The three reference sets of ``n`` images, fixed by REFERENCE_SEED (never by a cell)."""
    gen = torch.Generator().manual_seed(REFERENCE_SEED)
    real = train[torch.randperm(len(train), generator=gen)[:n]]
    return {"real": real, "blur": gaussian_blur(real, 1.0), "noise": torch.rand(real.shape, generator=gen) * 2 - 1}


def compute(net, held_out: torch.Tensor, train: torch.Tensor, n: int) -> dict[str, dict]:
    return {row: score(net, held_out, images) for row, images in reference_images(train, n).items()}


def cache_root() -> Path:
    return Path(os.environ.get("FEDFUSE_CACHE", Path.home() / ".cache" / "fedfuse")) / "references"


def references(key: dict, net, held_out: torch.Tensor, train: torch.Tensor, n: int) -> dict[str, dict]:
    """The reference rows for ``key`` (space, data, classes, n), from the cache or computed."""
    from fedfuse.toolkit.seeding import stable_hash

    return _cached(stable_hash({**key, "n": n, "held_out": len(held_out), "version": 1}), net, held_out, train, n)


@functools.lru_cache(maxsize=64)
def _cached_read(path: str) -> str:
    return Path(path).read_text()


def _cached(digest: str, net, held_out, train, n) -> dict[str, dict]:
    path = cache_root() / f"{digest}.json"
    if path.is_file():
        return json.loads(_cached_read(str(path)))
    rows = compute(net, held_out, train, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(rows)))  # concurrent cells never read half a file
    return rows


def cell_figures(quality: dict, rows: dict[str, dict]) -> dict:
    """What a cell stores beside its own scores: each row's FID and recall, and its FID as a
    fraction of the noise row's."""
    out = {f"ref_{metric}_{row}": rows[row][metric] for row in ROWS for metric in ("fid", "recall")
           if metric in rows[row]}
    out["fid_vs_noise"] = quality["fid"] / rows["noise"]["fid"]
    out["ref_separation"] = rows["noise"]["fid"] / max(rows["real"]["fid"], 1e-9)
    return out
