"""The three ways to combine clients' LoRA factors (fedavg_lora/aggregation.py), on values."""

import pytest
import torch

from fedfuse.protocols.fedavg_lora import aggregation as agg


def client_state(generator, rank=2, d_in=6, d_out=5, layers=("blk.to_q", "blk.to_v"), a=None):
    state = {}
    for layer in layers:
        state[layer + agg.A_SUFFIX] = a[layer] if a else torch.randn(rank, d_in, generator=generator)
        state[layer + agg.B_SUFFIX] = torch.randn(d_out, rank, generator=generator)
    state["class_embedding.weight"] = torch.randn(3, 4, generator=generator)
    return state


def weighted_mean_state(states, weights):
    total = sum(weights)
    return {k: sum(w / total * s[k] for s, w in zip(states, weights)) for k in states[0]}


def test_separate_averaging_is_inexact_and_its_error_is_measured():
    g = torch.Generator().manual_seed(0)
    states, weights = [client_state(g) for _ in range(3)], [1.0, 2.0, 3.0]
    exact = agg.mean_products(states, weights)
    by_hand = sum(w / 6 * states[i]["blk.to_q" + agg.B_SUFFIX].double() @ states[i]["blk.to_q" + agg.A_SUFFIX].double()
                  for i, w in enumerate(weights))
    assert torch.allclose(exact["blk.to_q"], by_hand)
    error = agg.aggregation_error(exact, weighted_mean_state(states, weights))
    assert 0.1 < error < 2.0  # independent random factors: mean(B) mean(A) is far from mean(BA)


def test_ffa_is_exact_when_every_client_keeps_the_shared_a():
    g = torch.Generator().manual_seed(1)
    shared_a = {layer: torch.randn(2, 6, generator=g) for layer in ("blk.to_q", "blk.to_v")}
    states, weights = [client_state(g, a=shared_a) for _ in range(4)], [3.0, 1.0, 1.0, 5.0]
    exact = agg.mean_products(states, weights)
    assert agg.aggregation_error(exact, weighted_mean_state(states, weights)) == pytest.approx(0.0, abs=1e-6)
    sent = agg.sent_keys(states[0], "ffa")
    assert not any(k.endswith(agg.A_SUFFIX) for k in sent) and "class_embedding.weight" in sent
    assert agg.sent_keys(states[0], "svd") is states[0]


def test_svd_is_exact_up_to_truncation():
    g = torch.Generator().manual_seed(2)
    states, weights = [client_state(g) for _ in range(3)], [1.0, 1.0, 1.0]
    exact = agg.mean_products(states, weights)
    # rank 6 >= the mean's rank (3 clients x rank 2): the re-factored product is the mean itself
    full = agg.with_refactored(weighted_mean_state(states, weights), exact, rank=5)
    assert agg.aggregation_error(exact, full) == pytest.approx(0.0, abs=1e-5)
    # at the clients' rank 2, the error is exactly the dropped singular values' share
    applied = agg.with_refactored(weighted_mean_state(states, weights), exact, rank=2)
    assert applied["blk.to_q" + agg.A_SUFFIX].shape == (2, 6) and applied["blk.to_q" + agg.B_SUFFIX].shape == (5, 2)
    dropped = sum(float(torch.linalg.svdvals(d)[2:].pow(2).sum()) for d in exact.values())
    assert agg.aggregation_error(exact, applied) == pytest.approx((dropped / sum(float(d.pow(2).sum())
                                                                              for d in exact.values())) ** 0.5, rel=1e-4)
    separate = agg.aggregation_error(exact, weighted_mean_state(states, weights))
    assert agg.aggregation_error(exact, applied) < separate  # the best rank-2 update beats mean(B) mean(A)
    assert applied["class_embedding.weight"] is not None and torch.equal(
        applied["class_embedding.weight"], weighted_mean_state(states, weights)["class_embedding.weight"])


def test_nothing_changed_means_no_error():
    zero = {"l" + agg.A_SUFFIX: torch.zeros(2, 3), "l" + agg.B_SUFFIX: torch.zeros(4, 2)}
    assert agg.aggregation_error(agg.mean_products([zero, zero], [1, 1]), zero) == 0.0


def test_a_convolutions_factors_are_combined_as_the_matrices_they_are():
    """LoRA on a 3x3 convolution: A is r x in x 3 x 3, B out x r x 1 x 1; their product is the
    (out, in*9) matrix, and SVD re-factoring gives factors of the same shapes back."""
    g = torch.Generator().manual_seed(3)
    states = [{"conv1" + agg.A_SUFFIX: torch.randn(2, 4, 3, 3, generator=g),
               "conv1" + agg.B_SUFFIX: torch.randn(5, 2, 1, 1, generator=g)} for _ in range(3)]
    exact = agg.mean_products(states, [1.0, 1.0, 2.0])
    assert exact["conv1"].shape == (5, 36)
    applied = agg.with_refactored(weighted_mean_state(states, [1.0, 1.0, 2.0]), exact, rank=5)
    assert applied["conv1" + agg.A_SUFFIX].shape == (5, 4, 3, 3) and applied["conv1" + agg.B_SUFFIX].shape == (5, 5, 1, 1)
    assert agg.aggregation_error(exact, applied) == pytest.approx(0.0, abs=1e-5)
