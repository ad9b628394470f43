"""Split diffusion: the cut, the exact marginal, what crosses the network, who computes what."""

import pytest
import torch
from helpers import write_suite

from fedfuse.protocols.split_diffusion import task


def test_cut_ends_and_step_split():
    assert task.cut_index(0.0, 200) == 200 and task.cut_index(1.0, 200) == 0 and task.cut_index(0.4, 200) == 120
    assert task.split_steps(50, 200, 200) == (0, 50) and task.split_steps(50, 0, 200) == (50, 0)
    assert task.split_steps(50, 120, 200) == (20, 30)
    with pytest.raises(ValueError):
        task.cut_index(1.5, 200)


def test_exact_marginal_has_the_right_mean_and_variance():
    """x_0 -> x_cut (client) -> x_t (server, exact mode) must be distributed as q(x_t | x_0),
    for every element's own cut (clients may cut at different points)."""
    T, n = 200, 200_000
    x0 = torch.full((n, 1, 1, 1), 0.7)
    gen = torch.Generator().manual_seed(0)
    for t_c in (0, 80, 150):
        x_cut = task.noise_to_cut(x0, T, t_c, gen)
        cuts = torch.full((n,), t_c)
        for t in (t_c, t_c + 40, T - 1):
            noise = torch.randn(x_cut.shape, generator=gen)
            x_t = task.noise_from_cut(x_cut, cuts, torch.full((n,), t), T, "exact", noise)
            abar = task.full_schedule(T).alphas_cumprod[t]
            assert x_t.mean().item() == pytest.approx(abar.sqrt().item() * 0.7, abs=0.01)
            assert x_t.var().item() == pytest.approx(1 - abar.item(), rel=0.02)
    t_c, t = 80, 120
    x_cut = task.noise_to_cut(x0, T, t_c, gen)
    over = task.noise_from_cut(x_cut, torch.full((n,), t_c), torch.full((n,), t), T, "reference",
                               torch.randn(x_cut.shape, generator=gen))
    assert over.var().item() > 1.01 * (1 - task.full_schedule(T).alphas_cumprod[t].item())  # reference over-noises


def test_mixed_cuts_condition_the_server_in_exact_mode_only():
    assert task.shared_cuts([120, 40, 200, 120], 200) == [40, 120]  # t_c = T hands nothing over
    assert task.needs_cut_labels("exact", [40, 120]) and not task.needs_cut_labels("exact", [120])
    assert not task.needs_cut_labels("reference", [40, 120])
    from fedfuse.protocols.split_diffusion.server_loop import cut_labels
    from fedfuse.toolkit.models import build_unet

    assert cut_labels("exact", [120, 40, 120], 200) == {40: 0, 120: 1}  # one label per distinct cut
    assert cut_labels("reference", [120, 40], 200) == {} and cut_labels("exact", [120, 120], 200) == {}
    model = build_unet((1, 8, 8), "tiny", 0, classes=2)
    x_cut, cuts = torch.randn(6, 1, 8, 8), torch.tensor([40, 40, 40, 120, 120, 120])

    def loss(labels):  # the same noise draw each time: only the cut labels differ
        return task.server_loss(model, x_cut, cuts, torch.tensor(labels), 200, "exact", torch.Generator().manual_seed(0))

    assert torch.isfinite(loss([0, 0, 0, 1, 1, 1]))
    assert abs(loss([0, 0, 0, 1, 1, 1]).item() - loss([1, 1, 1, 0, 0, 0]).item()) > 1e-4  # the label reaches the model

    def sample(label):
        return task.server_sample(model, 200, 120, "exact", 3, (1, 8, 8), 4, torch.Generator().manual_seed(1),
                                  labels=torch.full((3,), label))

    assert sample(1).shape == (3, 1, 8, 8) and torch.equal(sample(1), sample(1))
    assert (sample(1) - sample(0)).abs().max() > 1e-3  # sampling follows the cut label too


def test_split_sampling_hands_over_at_the_cut():
    from fedfuse.toolkit.models import build_unet

    T, t_c = 100, 60
    server, client = build_unet((1, 8, 8), "tiny", 0), build_unet((1, 8, 8), "tiny", 1)
    gen = torch.Generator().manual_seed(0)
    x_cut = task.server_sample(server, T, t_c, "exact", 5, (1, 8, 8), 4, gen)
    x0 = task.client_sample(client, T, t_c, x_cut, 6, gen)
    assert x_cut.shape == x0.shape == (5, 1, 8, 8)
    assert x0.min() >= -1 and x0.max() <= 1 and torch.isfinite(x0).all()
    assert task.ddim_over(task.full_schedule(T).betas[:t_c], 6).timesteps[0] == t_c - 1  # starts at the cut
    # a client that predicts no noise keeps x_cut's own estimate of x_0 all the way down: what it
    # returns is x_cut rescaled at the cut, so it starts from the x_cut it is given (not fresh noise)
    class Still(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # Fabric sets up a module with parameters

        def forward(self, x, t, **kwargs):
            return type("Out", (), {"sample": torch.zeros_like(x)})()

    assert torch.allclose(task.client_sample(Still(), T, t_c, x_cut, 6, gen), task.naive_reconstruction(x_cut, T, t_c),
                          atol=1e-5)


def test_the_attacks_loss_on_the_server_targets_the_noise_added_since_the_cut():
    """cut_step_loss: x_t from q(x_t | x_0) and the target sqrt((1 - r) / (1 - abar_t)) eps, with
    r = abar_t / abar_{t_c - 1}; at t_c = 0 the plain noise-prediction loss."""
    zero = lambda x, t, **kw: type("Out", (), {"sample": torch.zeros_like(x)})()  # noqa: E731
    x0, noise = torch.zeros(3, 1, 8, 8), torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t, abar = torch.tensor([150, 150, 199]), task.full_schedule(200).alphas_cumprod
    mean_sq = noise.pow(2).flatten(1).mean(1)
    assert torch.allclose(task.cut_step_loss(200, 0)(zero, x0, t, noise, None), mean_sq)
    r = abar[t] / abar[119]
    assert torch.allclose(task.cut_step_loss(200, 120)(zero, x0, t, noise, None), (1 - r) / (1 - abar[t]) * mean_sq)


def test_the_server_pool_keeps_the_newest_images():
    pool = task.Pool(5)
    pool.add(x_cut=torch.arange(4.0), cut=torch.zeros(4))
    pool.add(x_cut=torch.arange(4.0, 7.0), cut=torch.ones(3))
    assert len(pool) == 5 and pool.tensors["x_cut"].tolist() == [2, 3, 4, 5, 6]
    assert pool.tensors["cut"].tolist() == [0, 0, 1, 1, 1]


def test_a_pool_smaller_than_a_round_keeps_every_clients_newest_batches():
    """Five clients' receipts go in as they would arrive, a batch of each in turn: a pool that
    holds half a round keeps about the newest half of every client's batches (client after
    client, it kept clients 2-4 only)."""
    from fedfuse.protocols.split_diffusion.server_loop import add_to_pool

    assert task.interleaved([3, 5], 2).tolist() == [0, 1, 3, 4, 2, 5, 6, 7]
    shared = {node: (torch.full((40, 1, 2, 2), float(node)), torch.full((40,), node)) for node in range(5)}
    pool = task.Pool(100)
    add_to_pool(pool, shared, {node: 120 for node in range(5)}, {}, batch_size=8)
    kept = pool.tensors["cond"]
    assert len(pool) == 100 and torch.bincount(kept, minlength=5).tolist() == [16, 16, 20, 24, 24]
    assert torch.equal(pool.tensors["x_cut"][:, 0, 0, 0].long(), kept)  # images keep their conditions


def test_joint_labels_give_cut_and_condition_their_own_embedding():
    cond, cut = torch.tensor([0, 2, 3]), torch.tensor([1, 1, 0])
    assert task.joint_label(None, None, 0) is None and task.joint_label(cut, None, 0).tolist() == [1, 1, 0]
    assert task.joint_label(None, cond, 3).tolist() == [0, 2, 3]  # 3 = no condition
    assert task.joint_label(cut, cond, 3).tolist() == [4, 6, 3]
    assert task.server_classes(2, 3) == 8 and task.server_classes(0, 3) == 4 and task.server_classes(0, 0) is None


def test_guidance_combines_conditional_and_null_predictions():
    from fedfuse.toolkit.models import build_unet
    from fedfuse.toolkit.sampling import Guided

    model = build_unet((1, 8, 8), "tiny", 0, classes=3)
    x, t, labels = torch.randn(2, 1, 8, 8), torch.tensor(5), torch.tensor([0, 1])
    with torch.no_grad():
        cond = model(x, t, class_labels=labels).sample
        null = model(x, t, class_labels=torch.full((2,), 2)).sample
        guided = Guided(model, labels, torch.full((2,), 2), 3.0)(x, t).sample
    assert torch.allclose(guided, null + 3.0 * (cond - null), atol=1e-5)


def test_cut_ratios_must_match_the_clients(cli, tmp_path):
    entry = '[[protocols]]\nname = "split-diffusion"\nconfig = { cut_ratios = [0.2, 0.6, 0.8] }\n'
    done = cli("run", str(write_suite(tmp_path / "s.toml", entry)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "'cut_ratios' has 3 entries for 2 clients" in done.stderr
    assert not (tmp_path / "out").exists()
    entry = '[[protocols]]\nname = "split-diffusion"\nconfig = { cut_ratios = [0.2, 1.6] }\n'
    done = cli("run", str(write_suite(tmp_path / "t.toml", entry)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "'cut_ratios[1]' must be in [0, 1]" in done.stderr
