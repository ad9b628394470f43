"""Differential privacy: DP-SGD's mechanism (toolkit.privacy), its accountant (bench.metrics.dp)
and the harness's wiring, on real UNets and real cells at tiny sizes."""

import math

import pytest
import torch

from fedfuse.bench.metrics.dp import Ledger, DpSpec, epsilon
from fedfuse.datasets import ClientData
from fedfuse.datasets.loading import load as load_dataset
from fedfuse.toolkit.ddpm import Recipe, build_scheduler, diffusion_loss, train
from fedfuse.toolkit.models import build_unet
from fedfuse.toolkit.privacy import DpSgd

SHAPE = (1, 8, 8)


def tiny_data(n=40, seed=0) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    return ClientData(torch.rand((n, *SHAPE), generator=g) * 2 - 1, torch.randint(0, 3, (n,), generator=g),
                      torch.arange(n))


def dp(clip, sigma, seed=7, records=40) -> DpSgd:
    return DpSgd(clip, sigma, torch.Generator().manual_seed(seed), records=records)


def trained(dp_sgd=None, steps=3, seed=0, preset="tiny"):
    model = build_unet(SHAPE, preset, seed=0, classes=3)
    recipe = Recipe(lr=1e-2, batch_size=8, warmup_steps=0, ema_decay=0)
    train(model, build_scheduler(50), tiny_data(), steps, recipe, torch.Generator().manual_seed(seed),
          conditional=True, dp=dp_sgd)
    return model.state_dict()


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_per_sample_gradients_sum_to_the_batch_gradient_for_every_parameter():
    model = build_unet(SHAPE, "base-attn", seed=0, classes=3)  # attention at every level: the case opacus's hooks got wrong
    images, labels = tiny_data().sample_batch(6, torch.Generator().manual_seed(1))
    with dp(1.0, 0.0).per_sample(model) as wrapped:
        diffusion_loss(wrapped, build_scheduler(50), images, torch.Generator().manual_seed(2), labels).backward()
        for name, p in model.named_parameters():
            scale = p.grad.abs().max().item()
            if scale > 1e-6:  # a key bias's gradient is 0 in exact arithmetic (softmax ignores it)
                assert torch.allclose(p.grad_sample.mean(0), p.grad, atol=1e-4 * scale), name
    assert not any(hasattr(p, "grad_sample") for p in model.parameters()), "hooks and per-sample gradients are removed"


def test_no_noise_and_an_unreachable_clip_train_the_bit_identical_model():
    plain = trained()
    assert same(trained(dp(clip=1e30, sigma=0.0)), plain)
    assert not same(trained(dp(clip=1e-3, sigma=0.0)), plain), "a clip that binds changes the model"


def test_the_noise_is_seeded_from_the_cell():
    first, again = trained(dp(1.0, 1.0, seed=7)), trained(dp(1.0, 1.0, seed=7))
    assert same(first, again)
    assert not same(first, trained(dp(1.0, 1.0, seed=8)))


def test_privatize_gives_the_clipped_per_sample_mean_plus_scaled_noise():
    """DP-SGD's gradient against one computed image by image: each image's own gradient
    (a batch of one: GroupNorm is per image) clipped to C, summed, divided by the batch."""
    model = build_unet(SHAPE, "tiny", seed=0, classes=3)
    params = [p for p in model.parameters()]
    images, labels = tiny_data().sample_batch(5, torch.Generator().manual_seed(1))
    noise, t = torch.randn(images.shape, generator=torch.Generator().manual_seed(3)), torch.arange(5) * 9
    loss_of = lambda m, i: torch.nn.functional.mse_loss(m(images[i], t[i], class_labels=labels[i]).sample, noise[i])  # noqa: E731
    reference = [torch.zeros_like(p) for p in params]
    clip = 0.05
    for i in range(5):
        grads = torch.autograd.grad(loss_of(model, [i]), params)
        factor = min(1.0, clip / (torch.sqrt(sum(g.pow(2).sum() for g in grads)).item() + 1e-6))
        for r, g in zip(reference, grads):
            r.add_(g * factor / 5)
    mechanism = dp(clip, 0.0)
    with mechanism.per_sample(model) as wrapped:
        loss_of(wrapped, slice(None)).backward()
        mechanism.privatize(params)
    assert factor < 1, "the clip binds in this test"
    for p, r in zip(params, reference):
        assert torch.allclose(p.grad, r, atol=1e-6, rtol=1e-4)
    assert mechanism.steps == 1 and mechanism.rate_steps == pytest.approx(5 / 40)


def test_noisy_steps_draw_poisson_batches_at_the_stated_rate():
    data, mechanism = tiny_data(n=400), dp(1.0, 1.0, records=400)
    sizes = [len(mechanism.draw(data, 40, torch.Generator().manual_seed(s))[0]) for s in range(200)]
    assert abs(sum(sizes) / len(sizes) - 40) < 1.5 and len(set(sizes)) > 5  # mean 40, varying
    with pytest.raises(RuntimeError, match="drawn by DpSgd.draw"):  # a noisy step must sample as accounted
        model, fresh = build_unet(SHAPE, "tiny", seed=0), dp(1.0, 1.0, records=400)
        with fresh.per_sample(model) as wrapped:
            diffusion_loss(wrapped, build_scheduler(50), data.images[:4], torch.Generator()).backward()
            fresh.privatize([p for p in model.parameters()])


def rdp_subsampled_gaussian(q: float, sigma: float, alpha: int) -> float:
    """The RDP of the Poisson-subsampled Gaussian at integer order alpha, by the binomial
    expansion of Mironov, Talwar & Zhang (2019), eq. (3.3): written here, not opacus's code."""
    if q == 1.0:  # the plain Gaussian: alpha / (2 sigma^2)
        return alpha / (2 * sigma ** 2)
    logs = [math.log(math.comb(alpha, k)) + (alpha - k) * math.log(1 - q) + k * math.log(q) + (k * k - k) / (2 * sigma ** 2)
            for k in range(alpha + 1)]
    top = max(logs)  # summed in log space: the terms overflow a float
    return (top + math.log(sum(math.exp(v - top) for v in logs))) / (alpha - 1)


def independent_epsilon(q, sigma, steps, delta) -> float:
    """RDP -> (ε, δ) by Balle et al. (2020), Thm 21, minimised over integer orders."""
    return min(steps * rdp_subsampled_gaussian(q, sigma, a) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
               for a in range(2, 64))


def test_a_delta_near_one_over_n_is_refused():
    from fedfuse.bench.metrics.dp import check_delta

    check_delta(DpSpec(1.0, 1.0, delta=1e-5), 3, [249, 240, 200])
    with pytest.raises(ValueError, match="not well below 1/N for N = 249 images of a client: give at most 4.0e-04"):
        check_delta(DpSpec(1.0, 1.0, delta=1e-3), 3, [249, 240, 200])
    with pytest.raises(ValueError, match="not well below 1/N for N = 3 clients"):
        check_delta(DpSpec(1.0, 1.0, delta=0.05, level="client"), 3, [249, 240, 200])


@pytest.mark.parametrize("q, sigma, steps", [(1.0, 2.0, 10), (0.02, 1.1, 1000), (0.05, 1.0, 200), (0.25, 2.0, 50)])
def test_the_accountant_matches_an_independent_rdp_computation(q, sigma, steps):
    ours, theirs = epsilon(sigma, {q: steps}, 1e-5), independent_epsilon(q, sigma, steps, 1e-5)
    # opacus also searches fractional orders, so it may only be lower, and by little
    assert theirs * 0.99 <= ours <= theirs + 1e-9


def test_epsilon_is_infinite_without_noise_zero_without_steps_and_the_largest_over_clients():
    assert epsilon(0.0, {0.1: 10}, 1e-5) == math.inf and epsilon(1.0, {}, 1e-5) == 0.0
    ledger = Ledger(DpSpec(clip=1.0, noise_multiplier=1.0))
    ledger.add_round({0: {"dp_steps": 10, "dp_rate_steps": 1.0}, 1: {"dp_steps": 10, "dp_rate_steps": 2.0}})
    assert ledger.epsilon() == pytest.approx(epsilon(1.0, {0.2: 10}, 1e-5))  # client 1 samples more of its images
    ledger.add_round({0: {"dp_steps": 10, "dp_rate_steps": 1.0}})
    assert ledger.epsilon() == pytest.approx(max(epsilon(1.0, {0.1: 20}, 1e-5), epsilon(1.0, {0.2: 10}, 1e-5)))


TINY_FEDAVG = {"model": "tiny", "local_steps": 3, "batch_size": 16, "timesteps": 50, "warmup_steps": 0}


def cell_metrics(tmp_path, name, dp=None, protocol="fedavg", config=TINY_FEDAVG):
    from fedfuse.testing import run_in_process, tiny_cell

    return run_in_process(tiny_cell(protocol, {**config, **({"dp": dp} if dp else {})}, rounds=2, samples=16,
                                    sample_steps=2, mia_samples=16), tmp_path / name)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The plain tiny fedavg cell the DP cells are held against (run once for the module)."""
    return cell_metrics(tmp_path_factory.mktemp("plain"), "plain")


def test_a_dp_cell_trains_the_plain_model_without_noise_and_records_its_budget(tmp_path, plain):
    """Cells end to end (in process): the identity and the seeding at the cell level, ε recorded
    per round and per cell, null where nothing is claimed."""
    clipless = cell_metrics(tmp_path, "clipless", {"clip": 1e30, "noise_multiplier": 0.0})
    assert clipless["model_sha256"] == plain["model_sha256"]
    assert plain["dp_epsilon"] is None and plain["dp_delta"] is None
    assert clipless["dp_epsilon"] is None and clipless["dp_delta"] == 1e-5  # σ = 0 claims nothing
    noisy = cell_metrics(tmp_path, "noisy", {"clip": 1.0, "noise_multiplier": 1.0})
    assert noisy["model_sha256"] == cell_metrics(tmp_path, "noisy-again", {"clip": 1.0, "noise_multiplier": 1.0})["model_sha256"]
    assert noisy["model_sha256"] != plain["model_sha256"]
    # each client: 3 steps a round, 2 rounds, expected batch 16 of its half of the digits' images
    images = len(load_dataset("digits", {}).train_images) // 2
    assert noisy["dp_epsilon"] == pytest.approx(epsilon(1.0, {16 / images: 6}, 1e-5), rel=1e-3)


def test_dp_tables_are_checked_against_the_protocol_and_their_keys():
    from fedfuse.plugins.config import ConfigError
    from fedfuse.testing import tiny_cell

    with pytest.raises(ConfigError, match="does not take record-level DP"):
        tiny_cell("centralized", {"dp": {"clip": 1.0, "noise_multiplier": 1.0}})  # it takes none
    with pytest.raises(ConfigError, match="unknown key 'sigma'"):
        tiny_cell("fedavg", {"dp": {"clip": 1.0, "sigma": 1.0}})
    with pytest.raises(ConfigError, match="noise_multiplier missing"):
        tiny_cell("fedavg", {"dp": {"clip": 1.0}})
    with pytest.raises(ConfigError, match="clip must be a finite norm > 0"):
        tiny_cell("fedavg", {"dp": {"clip": 0.0, "noise_multiplier": 1.0}})
    assert tiny_cell("fedavg", {"dp": {"clip": 1.0, "noise_multiplier": 1.0}}).cell_id != tiny_cell("fedavg").cell_id


def test_a_shared_image_is_clipped_so_that_the_cuts_own_noise_makes_it_a_gaussian_mechanism():
    from fedfuse.toolkit.privacy import DpShare

    x0 = tiny_data().images[:6] * torch.linspace(0.01, 1, 6).view(-1, 1, 1, 1)  # small and large images
    a, s, sigma = 0.8, 0.6, 2.0
    clipped = DpShare(sigma, records=40).clip(x0, a, s)
    norms, before = clipped.flatten(1).norm(dim=1), x0.flatten(1).norm(dim=1)
    assert torch.all(a * norms <= s / sigma * (1 + 1e-6)), "signal / noise std <= 1 / sigma"
    kept = before * a <= s / sigma
    assert kept.any() and (~kept).any() and torch.equal(clipped[kept], x0[kept]), "an image within the bound is sent as is"
    assert torch.equal(DpShare(0.0, records=40).clip(x0, a, s), x0)


def test_split_diffusion_accounts_its_shared_batches_with_its_client_training(tmp_path):
    """Each round a split client takes local_steps DP-SGD steps on Poisson batches and shares
    exactly those batches noised to the cut: 2 x local_steps releases a round at rate B / N."""
    from fedfuse.bench.engine.conformance import tiny_config
    from fedfuse.plugins.manager import registry

    config = tiny_config(registry().get("protocols", "split-diffusion"), {"batch_size": 16})
    metrics = cell_metrics(tmp_path, "split", {"clip": 1.0, "noise_multiplier": 1.5}, "split-diffusion", config)
    images = len(load_dataset("digits", {}).train_images) // 2
    steps = 2 * config["local_steps"] * 2  # training and sharing, two rounds
    assert metrics["dp_epsilon"] == pytest.approx(epsilon(1.5, {16 / images: steps}, 1e-5), rel=1e-3)
    assert metrics["nn_mse"] > 0  # the harness measured what the server received


def test_a_track_binds_entrants_to_its_dp_budget_and_the_front_places_no_dp_at_infinity():
    from fedfuse.bench.engine.runner import dp_budget_figures
    from fedfuse.leaderboard.ranking import group, mark_fronts, rank
    from fedfuse.plugins import MetricSpec

    budget = {"epsilon": 8.0, "delta": 1e-5}
    assert dp_budget_figures({"dp_epsilon": 7.9, "dp_delta": 1e-5}, budget) == {"over_dp_budget": 0.0}
    for over in ({"dp_epsilon": None, "dp_delta": None}, {"dp_epsilon": 8.1, "dp_delta": 1e-5},
                 {"dp_epsilon": 2.0, "dp_delta": 1e-3}):
        assert dp_budget_figures(over, budget) == {"over_dp_budget": 1.0}, over
    assert dp_budget_figures({"dp_epsilon": None}, {}) == {}

    def record(label, fid, eps, over=0.0):
        return {"suite": "s", "suite_version": "1", "suite_digest": "d", "label": label, "dataset": "digits",
                "partitioner": "iid", "profile": "p", "seed": 0, "status": "ok", "evaluation": {},
                "metrics": {"fid": fid, "dp_epsilon": eps, "over_dp_budget": over}}

    specs = {"fid": MetricSpec("fid", "", False), "dp_epsilon": MetricSpec("dp_epsilon", "", False),
             **{m: MetricSpec(m, "", False) for m in ("bytes_up", "energy_j", "client_flops", "mia_auc")}}
    rows = rank(group([record("plain", 10.0, None, 1.0), record("eps8", 20.0, 8.0), record("eps2", 30.0, 2.0),
                       record("eps2-worse", 40.0, 2.0)], {}, {}), specs)
    assert [(r.label, r.place) for r in rows][-1] == ("plain", "over DP budget")
    mark_fronts(rows, specs)
    assert {r.label for r in rows if "DP ε" in r.pareto} == {"eps8", "eps2"}
    free = rank(group([record("plain", 10.0, None), record("eps8", 20.0, 8.0)], {}, {}), specs)
    mark_fronts(free, specs)
    assert {r.label for r in free if "DP ε" in r.pareto} == {"plain", "eps8"}  # no DP: at ∞, on it by its quality


TINY_QUANT = {**TINY_FEDAVG, "bits": 8}


@pytest.mark.parametrize("protocol, config", [("fedavg", TINY_FEDAVG), ("fixed-quant", TINY_QUANT)])
def test_client_level_dp_fedavg_is_plain_fedavg_without_noise_and_accounts_each_round(tmp_path, plain, protocol,
                                                                                       config):
    """3 clients of equal size: with σ = 0 and a clip no update reaches, DP-FedAvg's equal
    weights are FedAvg's, to the bit; with noise, ε composes one release a round at q = 1. The
    same for a Flower strategy's rounds (fedavg) and a loop that averages decoded 8-bit updates
    itself (fixed-quant: the noise goes on the aggregate, after the clients' quantization)."""
    if protocol != "fedavg":
        plain = cell_metrics(tmp_path, "plain", protocol=protocol, config=config)
    level = {"level": "client", "clip": 1e30, "noise_multiplier": 0.0}
    assert cell_metrics(tmp_path, "clipless", level, protocol, config)["model_sha256"] == plain["model_sha256"]
    noisy = cell_metrics(tmp_path, "noisy", {**level, "clip": 0.5, "noise_multiplier": 2.0}, protocol, config)
    assert noisy["model_sha256"] != plain["model_sha256"]
    assert noisy["dp_epsilon"] == pytest.approx(epsilon(2.0, {1.0: 2}, 1e-5))


def test_client_level_dp_needs_a_mean_aggregator(tmp_path):
    from flwr.serverapp.strategy import FedMedian, FedProx

    from fedfuse.bench.engine.services import ServerRun
    from fedfuse.plugins.manager import registry
    from fedfuse.testing import tiny_cell

    cell = tiny_cell("fedavg", {**TINY_FEDAVG, "dp": {"level": "client", "clip": 1.0, "noise_multiplier": 1.0}})
    run = ServerRun.for_cell(cell, tmp_path, registry())
    with pytest.raises(ValueError, match="needs a mean aggregator, not FedMedian"):
        run.privacy.client_mean(1, None, [], None, FedMedian())
    with pytest.raises(AttributeError):  # FedProx averages as FedAvg does: past the check, into the (absent) replies
        run.privacy.client_mean(1, None, [], None, FedProx())


def test_a_level_the_protocol_does_not_list_is_refused():
    from fedfuse.plugins.config import ConfigError
    from fedfuse.testing import tiny_cell

    with pytest.raises(ConfigError, match="does not take client-level DP"):
        tiny_cell("split-diffusion", {"dp": {"level": "client", "clip": 1.0, "noise_multiplier": 1.0}})


def test_only_a_record_level_cell_hands_its_clients_the_dp_service():
    from fedfuse.bench.engine.services import ClientRun
    from fedfuse.testing import tiny_cell

    def client(dp):
        return ClientRun(tiny_cell("fedavg", {**TINY_FEDAVG, **({"dp": dp} if dp else {})}), None, 0, 2, tiny_data())

    from fedfuse.bench.engine.privacy import DP_SALT
    from fedfuse.toolkit.seeding import derive_seed

    table = {"clip": 0.5, "noise_multiplier": 2.0}
    dp, share = client(table).dp_sgd(1), client(table).dp_share()
    assert isinstance(dp, DpSgd) and (dp.clip, dp.noise_multiplier, dp.records) == (0.5, 2.0, len(tiny_data()))
    assert dp.generator.initial_seed() == derive_seed(0, 0, DP_SALT, 1)  # the cell's seed, the client, the round
    assert (share.noise_multiplier, share.records) == (2.0, len(tiny_data()))
    for dp in (None, {**table, "level": "client"}):  # DP-FedAvg clips and noises on the server only
        assert client(dp).dp_sgd(1) is None and client(dp).dp_share() is None

