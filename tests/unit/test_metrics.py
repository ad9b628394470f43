"""Quality and disclosure metrics in the shipped feature spaces: they must be able to fail."""

import pytest
import torch

from fedfuse.bench.metrics.calibrate import corrupted
from fedfuse.bench.metrics.disclosure import disclosure
from fedfuse.bench.metrics.featnet import MIN_ACCURACY, WEIGHTS, feature_net
from fedfuse.bench.metrics.quality import score
from fedfuse.datasets.loading import load


@pytest.fixture(scope="module")
def digits():
    data = load("digits")
    net, card = feature_net("digits", data)
    return data, net, card


def test_shipped_feature_nets_have_cards_with_accuracy():
    for name in ("digits", "fashion-mnist", "mnist"):
        card = (WEIGHTS / f"{name}-featnet-v1.json").read_text()
        assert f'"feature_space": "{name}-featnet-v1"' in card
        assert (WEIGHTS / f"{name}-featnet-v1.pt").stat().st_size > 100_000
    _, card = feature_net("fashion-mnist", load("fashion-mnist"))
    assert card["test_accuracy"] > 0.88 > MIN_ACCURACY


def test_fid_floor_noise_and_monotone_corruption(digits):
    data, net, _ = digits
    real_a, real_b = data.train_images[:300], data.eval_images
    floor = score(net, real_b, real_a)
    noisy = {k: score(net, real_b, v)["fid"] for k, v in corrupted(real_a).items()}
    assert floor["fid"] < 0.2 * noisy["pure noise"]
    blur = [noisy[f"blur sigma={s}"] for s in (0.5, 1.0, 2.0)]
    noise = [noisy[f"noise sigma={s}"] for s in (0.05, 0.1, 0.2)]
    assert floor["fid"] < blur[0] < blur[1] < blur[2] and floor["fid"] < noise[0] < noise[1] < noise[2]
    assert floor["recall"] > 0.7 and floor["coverage"] > 0.7


def test_kid_is_unbiased_and_has_a_spread(digits):
    data, net, _ = digits
    # KID's scale follows the feature magnitudes (a cubic kernel): judge it against noise's.
    same = score(net, data.eval_images, data.train_images[:300])
    far = score(net, data.eval_images, torch.rand(300, 1, 8, 8) * 2 - 1)
    assert same["kid_std"] > 0 and abs(same["kid"]) < 2 * same["kid_std"]  # zero within its spread
    assert abs(same["kid"]) < 0.02 * far["kid"]


def test_disclosure_of_identical_and_of_noise(digits):
    data, net, _ = digits
    private = data.train_images[:200]
    same = disclosure(private[:50], private, net)
    assert same["nn_mse"] == pytest.approx(0.0, abs=1e-6) and same["nn_ssim"] == pytest.approx(1.0, abs=1e-4)
    noise = disclosure(torch.randn(50, 1, 8, 8), private, net)
    assert noise["nn_mse"] > 0.5 and noise["nn_ssim"] < 0.2
    assert noise["kid_to_private"] > same["kid_to_private"] + 0.05


def test_inception_feature_space_loads_offline():
    from fedfuse.bench.metrics.inception import InceptionFeatures

    net = InceptionFeatures()
    feats = net(torch.rand(4, 1, 28, 28) * 2 - 1)
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all()


def test_prdc_uses_fewer_neighbours_on_a_few_real_images(monkeypatch):
    """A client's held-out images of its own classes can be few: the scores still come out, with
    k lowered to what the smaller set allows (compute_prdc partitions at k + 1)."""
    import prdc as prdc_package

    from fedfuse.bench.metrics.quality import prdc

    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, 8, generator=gen).double(), torch.randn(40, 8, generator=gen).double()
    # a copy of the real set: every fake image sits on a real one, inside every ball it should be
    same = prdc(real, real.clone())  # (density compares distances for ties: not asserted exactly)
    assert (same["precision"], same["recall"], same["coverage"]) == (1.0, 1.0, 1.0)
    asked = []
    compute = prdc_package.compute_prdc
    monkeypatch.setattr(prdc_package, "compute_prdc", lambda **kw: asked.append(kw["nearest_k"]) or compute(**kw))
    scores = prdc(real, fake)
    assert asked == [3] and 0 <= scores["recall"] <= 1 and 0 <= scores["coverage"] <= 1  # min(5, 5 - 2, 40 - 2)
    assert prdc(real[:2], fake) == {}  # too few for any neighbour: no such scores, not a crash
