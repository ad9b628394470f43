"""The membership attack (fedfuse.bench.metrics.mia): exact AUC and TPR at 1 % FPR on hand-made
scores, the fixed timesteps, noise and targets, the suite key, and its calibration through the
harness's service (docs/metrics.md): a model trained long on few images tells its training
images from held-out ones, a freshly initialised one does not."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from helpers import write_suite

from fedfuse.bench.metrics import mia
from fedfuse.toolkit.ddpm import training_target


@pytest.fixture(autouse=True)
def one_thread():
    """One core, as the timings in the docstrings: two torch threads on a busy 2-core machine
    spin against each other (30x slower measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pairwise_auc(members, nonmembers) -> float:
    """The definition: the share of (member, non-member) pairs the member wins, ties half."""
    return float(np.mean([(a > b) + 0.5 * (a == b) for a in members for b in nonmembers]))


def test_auc_counts_every_pair_and_ties_as_halves():
    assert mia.auc([3, 4], [1, 2]) == 1.0
    assert mia.auc([1, 2], [3, 4]) == 0.0
    assert mia.auc([1, 1], [1, 1, 1]) == 0.5
    # (2,1) won, (2,3) lost, (3,1) won twice, (3,3) tied twice: 4 of 6 pairs
    assert mia.auc([2, 3, 3], [1, 3]) == pytest.approx(4 / 6)
    rng = np.random.default_rng(0)
    members, nonmembers = rng.integers(0, 5, 40), rng.integers(0, 5, 30)  # many ties
    assert mia.auc(members, nonmembers) == pytest.approx(pairwise_auc(members, nonmembers))


def test_average_ranks_share_ties():
    assert mia.average_ranks(np.array([10.0, 20.0, 10.0, 30.0])).tolist() == [1.5, 3.0, 1.5, 4.0]


def test_tpr_at_1fpr_uses_the_most_permissive_threshold_that_passes_at_most_1pct_of_nonmembers():
    hundred = np.arange(100.0)  # 1 of 100 may pass: threshold = the 2nd highest, 98 (strictly above)
    assert mia.tpr_at_fpr([99.5, 98.5, 98.0, 50.0], hundred) == 0.5
    three_hundred = np.arange(300.0)  # 3 may pass: the 4th highest, 296
    assert mia.tpr_at_fpr([297.0, 296.0], three_hundred) == 0.5
    ten = np.arange(10.0)  # under 100 non-members none may pass: above every non-member
    assert mia.tpr_at_fpr([9.0, 10.0, 11.0, 5.0], ten) == 0.5
    tied_top = np.r_[np.full(3, 10.0), np.arange(197.0) / 100]  # 2 may pass, but 3 tie at the top
    assert mia.tpr_at_fpr([10.0, 10.5], tied_top) == 0.5  # no threshold passes exactly 2: none pass
    assert mia.tpr_at_fpr([5.0, 6.0], [1.0, 2.0]) == 1.0 and mia.tpr_at_fpr([1.0], [5.0, 6.0]) == 0.0


def test_class_matched_pairs_members_with_heldout_images_of_their_class():
    members, pool = np.array([0, 0, 1, 2, 2, 2]), np.array([2, 0, 1, 1, 2, 0])
    mine, theirs = mia.class_matched(members, pool)
    assert mine.tolist() == [0, 1, 2, 3, 4] and theirs.tolist() == [1, 5, 2, 0, 4]  # one 2 too few held out
    assert members[mine].tolist() == pool[theirs].tolist()


def test_attack_timesteps_are_fixed_in_the_lower_half_of_the_range():
    assert mia.attack_timesteps((0, 200)).tolist() == [12, 37, 62, 87]
    late = mia.attack_timesteps((150, 200))
    assert late.tolist() == sorted(set(late.tolist())) and 150 <= late.min() and late.max() < 175
    assert mia.attack_timesteps((199, 200)).tolist() == [199] * mia.TIMESTEPS


class Zero(torch.nn.Module):
    """A denoiser that always predicts 0: its loss is the target's mean square."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # where the model lives: the CPU

    def forward(self, x, t, **kwargs):
        return SimpleNamespace(sample=torch.zeros_like(x))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_loss_targets_what_the_scheduler_trains_and_pairs_image_i_with_noise_i(kind):
    scheduler = DDPMScheduler(num_train_timesteps=50, prediction_type=kind)
    images = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    timesteps, noise = torch.tensor([3, 30]), mia.fixed_noise(2, 5, (1, 4, 4))
    got = mia.losses(Zero(), mia.scheduler_step_loss(scheduler), images, timesteps, noise, batch_size=2)
    targets = [training_target(scheduler, images, noise[k], torch.full((5,), int(t)))
               for k, t in enumerate(timesteps)]
    assert torch.allclose(got, torch.stack([y.pow(2).flatten(1).mean(1) for y in targets]).mean(0))
    expected = {"epsilon": noise[1], "sample": images,
                "v_prediction": scheduler.get_velocity(images, noise[1], torch.full((5,), 30))}[kind]
    assert torch.equal(targets[1], expected)


def test_the_same_images_as_members_and_nonmembers_score_exactly_at_chance():
    """Member i and non-member i get the same noise: identical sets get identical scores."""
    from fedfuse.toolkit.ddpm import build_scheduler
    from fedfuse.toolkit.models import build_unet

    images = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    result = mia.attack(build_unet((1, 8, 8), "tiny", seed=0), build_scheduler(200), images, images)
    assert result == {"mia_auc": 0.5, "mia_tpr_at_1fpr": 0.0, "mia_members": 24, "mia_nonmembers": 24}


def test_mia_samples_is_a_checked_suite_key_kept_in_the_cell_only_when_set(tmp_path):
    from fedfuse.bench.suites.expand import expand
    from fedfuse.bench.suites.parse import load_suite
    from fedfuse.plugins.config import ConfigError
    from fedfuse.plugins.manager import registry

    fedavg = '[[protocols]]\nname = "fedavg"\n'
    default = expand(load_suite(str(write_suite(tmp_path / "a.toml", fedavg, mia_samples=None))), registry())[0]
    assert "mia_samples" not in default.evaluation  # the cells of suites that do not set it keep their ids
    set_ = expand(load_suite(str(write_suite(tmp_path / "b.toml", fedavg, mia_samples="64"))), registry())[0]
    assert set_.evaluation["mia_samples"] == 64 and set_.cell_id != default.cell_id
    with pytest.raises(ConfigError, match="mia_samples"):
        load_suite(str(write_suite(tmp_path / "c.toml", fedavg, mia_samples="8")))


# --- calibration, through the harness's service: the tests below, and `python tests/test_mia.py`
# for docs/metrics.md's table (fedfuse.bench.metrics may not import the harness: tests/test_layout.py)

def calibration_run(seed: int, per_client: int = 0, mia_samples: int | None = None):
    """The ServerRun of a digits cell of 2 IID clients (at most ``per_client`` images each)."""
    from fedfuse.bench.engine.services import ServerRun
    from fedfuse.bench.suites.cells import DEFAULT_EVALUATION, CellSpec

    evaluation = {**DEFAULT_EVALUATION, **({"mia_samples": mia_samples} if mia_samples else {})}
    cell = CellSpec(suite="mia-calibration", suite_version="1", label="tiny-unet", protocol="fedavg",
                    protocol_version="2", config={}, dataset="digits", dataset_args={}, partitioner="iid",
                    partitioner_args={"max_per_client": per_client} if per_client else {}, clients=2, seed=seed,
                    evaluation=evaluation)
    return ServerRun(cell=cell, config=None, run_dir=Path("."))


def calibrate(steps: int, per_client: int = 0, seed: int = 0, mia_samples: int | None = None) -> dict:
    """The attack, through the harness's service, on a tiny UNet (T = 200, initialised with
    ``seed``) trained ``steps`` steps of 32 images (raw weights, no EMA) on the private images
    of ``calibration_run(seed, per_client, mia_samples)``; ``steps = 0``: untrained."""
    from fedfuse.bench.suites.cells import cell_partitions
    from fedfuse.datasets import ClientData
    from fedfuse.toolkit.ddpm import Recipe, build_scheduler, train
    from fedfuse.toolkit.models import build_unet

    run = calibration_run(seed, per_client, mia_samples)
    model, scheduler = build_unet(run.data.image_shape, "tiny", seed=seed), build_scheduler(200)
    if steps:
        private = ClientData(run.data.train_images, run.data.train_labels,
                             torch.from_numpy(np.concatenate(cell_partitions(run.cell))))
        train(model, scheduler, private, steps, Recipe(lr=2e-3, batch_size=32, warmup_steps=10, ema_decay=0),
              torch.Generator().manual_seed(seed))
    run.server_holds(model, scheduler)
    return run.membership_inference()


def test_the_harness_draws_private_members_and_class_matched_heldout_nonmembers():
    from fedfuse.bench.suites.cells import cell_partitions

    run = calibration_run(seed=0)
    members, heldout = run.membership_sets()
    assert len(members) == len(heldout) == len(set(members)) and 200 < len(members) <= 256
    assert set(members) <= set(np.concatenate(cell_partitions(run.cell)).tolist())
    assert (run.data.train_labels[members] == run.data.eval_labels[heldout]).all()
    assert (run.membership_sets()[0] == members).all()  # seeded: the same draw every time


def test_a_freshly_initialised_model_is_at_chance():
    """~250 members vs as many non-members: under the null (the model knows neither) the AUC's
    std is sqrt((m + n + 1) / (12 m n)) ~ 0.026; the band is ~4 std. Measured: 0.490 (seeds 1,
    2: 0.494, 0.508)."""
    result = calibrate(steps=0, seed=0)
    assert result["mia_members"] == result["mia_nonmembers"] > 200
    assert abs(result["mia_auc"] - 0.5) < 0.1, result
    assert result["mia_tpr_at_1fpr"] < 0.06, result  # chance: ~0.01


def test_a_model_trained_long_on_few_images_is_told_apart():
    """32 private images (2 clients x 16), a tiny UNet trained 200 steps of 32 on them (200
    epochs): measured AUC 0.98-1.0 and TPR@1%FPR 0.84-0.97 for seeds 0-2 (seed 0: 0.998, 0.94).
    With 32 non-members the TPR is the share of members above every non-member. ~12 s."""
    result = calibrate(steps=200, per_client=16, seed=0, mia_samples=32)
    assert result["mia_members"] == result["mia_nonmembers"] == 32
    assert result["mia_auc"] > 0.9 and result["mia_tpr_at_1fpr"] > 0.5, result


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="The membership attack's calibration table (docs/metrics.md).")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 200, 1000])
    parser.add_argument("--per-client", type=int, nargs="+", default=[16, 128], help="private images per client")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the tests (one_thread)
    print("| private images | steps | seed | members | AUC | TPR@1%FPR |\n|---|---|---|---|---|---|")
    for per_client in args.per_client:
        for steps in args.steps:
            for seed in args.seeds:
                r = calibrate(steps, per_client, seed, mia_samples=min(256, 2 * per_client))
                print(f"| {2 * per_client} | {steps} | {seed} | {r['mia_members']} | {r['mia_auc']:.3f} "
                      f"| {r['mia_tpr_at_1fpr']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
