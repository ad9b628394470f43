"""Differential privacy through the runner (its unit tests: tests/unit/test_privacy.py)."""


def test_a_cell_whose_delta_is_near_one_over_n_fails_before_it_trains(tmp_path):
    """The runner checks δ against the protected units once the data is partitioned (249
    images a client here), recording a failed cell with the reason; nothing trains."""
    from fedfuse.bench.engine.runner import SuiteRunner
    from fedfuse.plugins.manager import registry
    from fedfuse.testing import tiny_cell

    dp = {"clip": 1.0, "noise_multiplier": 1.0, "delta": 1e-3}
    cell = tiny_cell("fedavg", {"model": "tiny", "local_steps": 3, "dp": dp}, clients=3,
                     dataset_args={"public_classes": [0, 1, 2, 3, 4]})
    runner = SuiteRunner(registry(), tmp_path, "d")
    (outcome,) = runner.run([cell])
    assert outcome.status == "failed" and "not well below 1/N for N = 249 images of a client" in outcome.error
    assert not (tmp_path / "runs" / cell.cell_id / "samples.png").exists()
