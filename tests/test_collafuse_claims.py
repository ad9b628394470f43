"""scripts/collafuse_claims.py: CollaFuse's three claims read off leaderboard rows, on values."""

import importlib.util
from pathlib import Path

from fedfuse.leaderboard.ranking import group

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "collafuse_claims.py"
spec = importlib.util.spec_from_file_location("collafuse_claims", SCRIPT)
claims_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims_module)


def record(c: float, seed: int, fid: float, **metrics) -> dict:
    return {"suite": "s", "suite_version": "1", "suite_digest": "d", "label": f"c{c}", "dataset": "digits",
            "partitioner": "groups", "profile": "p", "seed": seed, "status": "ok", "evaluation": {},
            "protocol": "split-diffusion", "metrics": {"cut_ratio": c, "fid": fid, **metrics}}


def sweep(points: dict[float, tuple]) -> list:
    """{c: ((fid of seed 0, of seed 1), client FLOPs, nn_ssim)} as the script's sorted rows."""
    records = [record(c, seed, fid, client_flops=flops, client_gen_flops=flops, nn_ssim=ssim)
               for c, (fids, flops, ssim) in points.items() for seed, fid in enumerate(fids)]
    return sorted(group(records, {}), key=lambda r: r.mean("cut_ratio"))


def test_a_cut_ratio_beats_local_only_only_beyond_the_spread():
    rows = sweep({0.0: ((70, 74), 9, 0.0), 0.4: ((60, 64), 6, 0.5), 0.8: ((71, 75), 3, 0.9)})
    lines = claims_module.claims(rows)
    assert lines[0].endswith("holds") and "c = 0.4: FID 62 ± 2.8, better" in lines[2]
    assert lines[3].endswith("not told apart from local-only")  # 73 vs 72, spreads 2.8 each
    text = "\n".join(lines)
    assert "client_flops falls" in lines[4] and "the claim holds on 2 of 2 measures" in text
    assert "nn_ssim rises" in text


def test_a_step_within_the_spread_is_flat_and_the_claim_is_not_held():
    rows = sweep({0.0: ((70, 74), 9, 0.0), 0.4: ((80, 84), 9, 0.5), 0.8: ((90, 94), 3, 0.5)})
    lines = claims_module.claims(rows)
    assert lines[0].endswith("does not hold")
    assert "client_flops mixed: flat falls" in lines[4] and "the claim holds on 0 of 2 measures" in "\n".join(lines)
