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
    from fedfuse.toolkit.models import build_unet

    model, gen = build_unet((1, 8, 8), "tiny", 0, classes=2), torch.Generator().manual_seed(0)
    x_cut, cuts = torch.randn(6, 1, 8, 8), torch.tensor([40, 40, 40, 120, 120, 120])
    loss = task.server_loss(model, x_cut, cuts, torch.tensor([0, 0, 0, 1, 1, 1]), 200, "exact", gen)
    assert torch.isfinite(loss) and loss.item() > 0
    x = task.server_sample(model, 200, 120, "exact", 3, (1, 8, 8), 4, gen, labels=torch.full((3,), 1))
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


def test_cut_ratios_must_match_the_clients(cli, tmp_path):
    entry = '[[protocols]]\nname = "split-diffusion"\nconfig = { cut_ratios = [0.2, 0.6, 0.8] }\n'
    done = cli("run", str(write_suite(tmp_path / "s.toml", entry)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "'cut_ratios' has 3 entries for 2 clients" in done.stderr
    assert not (tmp_path / "out").exists()
    entry = '[[protocols]]\nname = "split-diffusion"\nconfig = { cut_ratios = [0.2, 1.6] }\n'
    done = cli("run", str(write_suite(tmp_path / "t.toml", entry)), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "'cut_ratios[1]' must be in [0, 1]" in done.stderr


SWEEP = "".join(f'[[protocols]]\nname = "split-diffusion"\nlabel = "c{c}"\n'
                f'config = {{ model = "tiny", client_model = "tiny", cut_ratio = {c}, local_steps = 4, server_steps = 4, share = "subset", share_size = 32 }}\n'
                for c in (0.0, 0.2, 0.6, 1.0)) + (
    '[[protocols]]\nname = "split-diffusion"\nlabel = "mixed"\n'
    'config = { model = "tiny", client_model = "tiny", cut_ratios = [0.2, 0.6], local_steps = 4, server_steps = 4, share = "subset", share_size = 32 }\n')


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
        for rnd in cells[label]["rounds"]:
            for client in rnd["per_client"].values():
                assert client["payload_up"] == 32 * 1 * 8 * 8 * 4
                assert client["payload_up"] < client["bytes_up"] < client["payload_up"] + 4096
    # A training step costs a party the same at any cut (4 client and 4 server steps here);
    # generating costs a client less as the server's share grows. Disclosure rises.
    c2, c6 = cells["c0.2"]["metrics"], cells["c0.6"]["metrics"]
    assert c6["client_flops"] == c2["client_flops"] and c6["client_gen_flops"] < c2["client_gen_flops"]
    assert c6["server_flops"] == c2["server_flops"] > 0
    assert c6["nn_mse"] < c2["nn_mse"]
    assert cells["c1.0"]["metrics"]["nn_mse"] == pytest.approx(0.0, abs=1e-6)  # at c = 1 clients share x_0
    assert cells["c1.0"]["metrics"]["client_flops"] < c6["client_flops"]
    # Per-client cuts: both clients send share_size images and train as many steps (a step costs
    # the same at any t); generating, each runs its own part of the 6 steps (c = 0.6: fewer).
    mixed = cells["mixed"]
    assert mixed["metrics"]["cut_ratio"] == pytest.approx(0.4) and "t_c" not in mixed["metrics"]
    for rnd in mixed["rounds"]:
        low, high = rnd["per_client"]["0"], rnd["per_client"]["1"]  # cut ratios 0.2 and 0.6
        assert low["payload_up"] == high["payload_up"] == 32 * 64 * 4 and low["flops_train"] == high["flops_train"]
    per_step = cells["c0.0"]["metrics"]["client_gen_flops"] / 6  # c = 0: the client runs all 6 steps
    own = [task.split_steps(6, task.cut_index(c, 200), 200)[1] for c in (0.2, 0.6)]
    assert own[1] < own[0] and mixed["metrics"]["client_gen_flops"] == pytest.approx(per_step * sum(own) / 2)
    for r in cells.values():  # the harness's evaluation adds no round: generating for it is not counted
        assert len(r["rounds"]) == 1 and "phase" not in r["rounds"][0] and r["metrics"]["fid"] > 0
        for client in r["rounds"][0]["per_client"].values():  # the server is never sent a client model
            assert client["payload_up"] <= 32 * 64 * 4


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


CONDITIONED = ('[[protocols]]\nname = "split-diffusion"\nlabel = "split"\n'
               'config = { model = "tiny", client_model = "tiny", cut_ratio = 0.6, local_steps = 3, batch_size = 8, '
               'server_pool = 40, condition = "label", guidance = 2.0 }\n'
               '[[protocols]]\nname = "local-only"\n'
               'config = { client_model = "tiny", local_steps = 3, batch_size = 8, condition = "label", guidance = 2.0 }\n'
               '[[protocols]]\nname = "centralized"\nconfig = { model = "tiny", local_steps = 3, batch_size = 8, '
               'condition = "label", guidance = 2.0 }\n')  # guided: the two-pass sampler end to end


@pytest.mark.slow
def test_batches_conditions_and_what_the_server_can_make_of_them(cli, tmp_path):
    """share = "batches": each round a client sends the cut-noised copy of every batch it
    trained on, with each image's label; the server takes one step per batch received, keeps a
    bounded pool, and its own model's view of what it received is scored as disclosure. The
    quality target is checked the protocol's way after round 2, and costs the protocol nothing."""
    suite = write_suite(tmp_path / "s.toml", CONDITIONED, partitioners='[{ name = "groups", by = "label" }]',
                        rounds="2", samples="16", sample_steps="6",  # fewer samples than x_cut received
                        target="{ fid = 1e9 }", eval_every="2", target_samples="16")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    cells = {r["label"]: r for r in cli.results(tmp_path / "out")}
    split, alone, central = cells["split"], cells["local-only"], cells["centralized"]
    for rnd in split["rounds"]:  # 3 batches of 8: float32 8x8 images and one int64 label each
        assert rnd["server_steps"] == 2 * 3 * 8 / 8
        for client in rnd["per_client"].values():
            assert client["payload_up"] == 3 * 8 * (64 * 4 + 8)
    m = split["metrics"]
    assert m["disclosed_conditions"] == 24
    for what in ("cut", "rescaled", "approx", "fresh"):
        assert m[f"disclosure_fid_{what}"] > 0 and m[f"disclosure_fid_{what}_heldout"] > 0
    # Generating costs the split client its share of the 6 steps, the lone client all 6, the
    # centralized baseline's clients nothing; guidance runs two passes a step on both sides.
    assert central["metrics"]["client_gen_flops"] == 0
    per_step = alone["metrics"]["client_gen_flops"] / 6
    assert m["client_gen_flops"] == pytest.approx(per_step * task.split_steps(6, task.cut_index(0.6, 200), 200)[1])
    assert per_step > 0 and alone["metrics"]["client_gen_s"] > 0
    assert all(r["status"] == "ok" and r["metrics"]["fid"] > 0 for r in cells.values())
    for cell in cells.values():  # evaluation exchanges leave the rounds' traffic and client FLOPs as they were
        first, second = cell["rounds"][:2]
        assert "target_fid" not in first and second["target_fid"] > 0
        assert cell["metrics"]["target_reached"] == 1 and cell["metrics"]["rounds_to_target"] == 2
        assert all(c["flops_sample"] == 0 for c in second["per_client"].values())
    for cell in (split, alone):  # the same exchange in both rounds, the evaluation's on top uncounted
        first, second = cell["rounds"][:2]
        assert (first["bytes_down"], first["bytes_up"], first["messages"]) == \
            (second["bytes_down"], second["bytes_up"], second["messages"])
    assert central["rounds"][1]["bytes_up"] == central["rounds"][1]["messages"] == 0  # the upload was in round 1
    # membership inference on what the server holds: its denoiser, or nothing at c = 0
    for cell in (split, central):
        assert 0 <= cell["metrics"]["mia_auc"] <= 1 and cell["metrics"]["mia_members"] == cell["metrics"]["mia_nonmembers"] > 0
    assert "mia_auc" not in alone["metrics"]


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
    from fedfuse.protocols.split_diffusion.server_app import add_to_pool

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
