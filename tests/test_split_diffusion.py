"""Split diffusion: the cut, the exact marginal, what crosses the network, who computes what."""

import pytest
import torch

from conftest import write_suite
from fedfuse.protocols.split_diffusion import task


def test_cut_ends_and_step_split():
    assert task.cut_index(0.0, 200) == 200 and task.cut_index(1.0, 200) == 0 and task.cut_index(0.4, 200) == 120
    assert task.split_steps(50, 200, 200) == (0, 50) and task.split_steps(50, 0, 200) == (50, 0)
    assert task.split_steps(50, 120, 200) == (20, 30)
    with pytest.raises(ValueError):
        task.cut_index(1.5, 200)


def test_exact_marginal_has_the_right_mean_and_variance():
    """x_0 -> x_cut (client) -> x_t (server, exact mode) must be distributed as q(x_t | x_0)."""
    T, t_c, n = 200, 80, 200_000
    x0 = torch.full((n, 1, 1, 1), 0.7)
    gen = torch.Generator().manual_seed(0)
    x_cut = task.noise_to_cut(x0, T, t_c, gen)
    schedule, offset, (low, high) = task.server_schedule(T, t_c, "exact")
    for s in (0, 40, high - 1):
        x_t = schedule.add_noise(x_cut, torch.randn(x_cut.shape, generator=gen), torch.full((n,), s))
        abar = task.full_schedule(T).alphas_cumprod[s + offset]
        assert x_t.mean().item() == pytest.approx(abar.sqrt().item() * 0.7, abs=0.01)
        assert x_t.var().item() == pytest.approx(1 - abar.item(), rel=0.02)
    reference, _, _ = task.server_schedule(T, t_c, "reference")
    t = t_c + 40
    over = reference.add_noise(x_cut, torch.randn(x_cut.shape, generator=gen), torch.full((n,), t))
    assert over.var().item() > 1.01 * (1 - task.full_schedule(T).alphas_cumprod[t].item())  # reference over-noises


SWEEP = "".join(f'[[protocols]]\nname = "split-diffusion"\nlabel = "c{c}"\n'
                f'config = {{ cut_ratio = {c}, local_steps = 4, server_steps = 4, share_size = 32 }}\n'
                for c in (0.0, 0.2, 0.6, 1.0))


@pytest.mark.slow
def test_what_crosses_and_who_computes(cli, tmp_path):
    suite = write_suite(tmp_path / "s.toml", SWEEP, partitioners='[{ name = "groups", by = "label" }]',
                        samples="32", sample_steps="6")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    cells = {r["label"]: r for r in cli.results(tmp_path / "out")}
    assert all(r["status"] == "ok" for r in cells.values())
    # c = 0: nothing derived from data crosses; the samples never leave the client either.
    assert cells["c0.0"]["metrics"]["payload_up"] == 0 and cells["c0.0"]["metrics"]["payload_down"] == 0
    assert "nn_mse" not in cells["c0.0"]["metrics"]
    # c > 0: per client per round, exactly share_size x_cut images in float32 go up.
    for label in ("c0.2", "c0.6"):
        for rnd in cells[label]["rounds"][:-1]:
            for client in rnd["per_client"].values():
                assert client["payload_up"] == 32 * 1 * 8 * 8 * 4
                assert client["payload_up"] < client["bytes_up"] < client["payload_up"] + 4096
    # Clients compute less as the server's share grows; the server more. Disclosure rises.
    c2, c6 = cells["c0.2"]["metrics"], cells["c0.6"]["metrics"]
    assert c6["client_flops"] < c2["client_flops"] and c6["server_flops"] > c2["server_flops"]
    assert c6["nn_mse"] < c2["nn_mse"]
    assert cells["c1.0"]["metrics"]["nn_mse"] == pytest.approx(0.0, abs=1e-6)  # at c = 1 clients share x_0
    assert cells["c1.0"]["metrics"]["client_flops"] < c6["client_flops"]
    for r in cells.values():
        sampling = r["rounds"][-1]
        assert sampling["phase"] == "sampling" and r["metrics"]["fid"] > 0
        for client in r["rounds"][0]["per_client"].values():  # the server is never sent a client model
            assert client["payload_up"] <= 32 * 64 * 4


def test_split_sampling_hands_over_at_the_cut():
    from fedfuse.bench.diffusion import build_unet

    T, t_c = 100, 60
    server, client = build_unet((1, 8, 8), 8, 0), build_unet((1, 8, 8), 8, 1)
    gen = torch.Generator().manual_seed(0)
    x_cut = task.server_sample(server, T, t_c, "exact", 5, (1, 8, 8), 4, gen)
    x0 = task.client_sample(client, T, t_c, x_cut, 6, gen)
    assert x_cut.shape == x0.shape == (5, 1, 8, 8)
    assert x0.min() >= -1 and x0.max() <= 1 and torch.isfinite(x0).all()
    assert task.ddim_over(task.full_schedule(T).betas[:t_c], 6).timesteps[0] == t_c - 1  # starts at the cut
