"""How the server combines the clients' LoRA factors. No flwr here.

A client's adapter on a layer is the pair (A, B): the layer's update is ``scaling * B @ A``
(``scaling = alpha / rank``, the same for every client, so it is left out below). FedAvg of A
and B separately applies ``mean(B) @ mean(A)``, which is not ``mean(B @ A)``, the update the
clients made (FL-LoRA literature: FFA-LoRA, FLoRA, SVD re-factoring). Three ways:

* ``fedavg-ab``: average A and B separately (plain FedAvg of the adapter weights), inexact.
* ``ffa``: FFA-LoRA (Sun et al., ICLR 2024): A stays at its seed-shared initialisation on every
  party; only B is trained and sent, so ``mean(B) @ A == mean(B @ A)``: exact, half the bytes.
* ``svd``: the server averages the products ``B_i @ A_i`` per layer and re-factors the mean to
  rank r by a truncated SVD (singular values split evenly between the factors): exact up to the
  truncation, which drops the mean's singular values beyond r.

Every round records ``aggregation_error`` = ||mean(B @ A) - B' @ A'|| / ||mean(B @ A)|| over
all adapted layers (Frobenius), B' @ A' being the update the server applies.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("fedavg-ab", "ffa", "svd")
A_SUFFIX, B_SUFFIX = ".lora_A.weight", ".lora_B.weight"


def adapted_layers(state: dict) -> list[str]:
    """The layers (key prefixes) that carry a LoRA pair in ``state``."""
    return sorted(k[: -len(A_SUFFIX)] for k in state if k.endswith(A_SUFFIX))


def product(state: dict, layer: str) -> torch.Tensor:
    """B @ A as a matrix; a convolution's factors (B: out x r x 1 x 1, A: r x in x k x k) as the
    matrices they are (out x r, r x in*k*k)."""
    return state[layer + B_SUFFIX].double().flatten(1) @ state[layer + A_SUFFIX].double().flatten(1)


def mean_products(states: list[dict], weights: list[float]) -> dict[str, torch.Tensor]:
    """{layer: sum_i w_i B_i @ A_i} with the weights normalised: the update the clients made."""
    total = float(sum(weights))
    return {layer: sum(w / total * product(s, layer) for s, w in zip(states, weights))
            for layer in adapted_layers(states[0])}


def refactor(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of rank ``rank`` with B @ A the best rank-``rank`` approximation of ``delta``."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    root = s[:rank].sqrt()
    return root[:, None] * vh[:rank], u[:, :rank] * root


def with_refactored(state: dict, exact: dict[str, torch.Tensor], rank: int) -> dict:
    """``state`` with each layer's (A, B) replaced by the rank-``rank`` SVD of its exact mean."""
    out = dict(state)
    for layer, delta in exact.items():
        a, b = refactor(delta, rank)
        old_a, old_b = state[layer + A_SUFFIX], state[layer + B_SUFFIX]
        out[layer + A_SUFFIX] = a.reshape(len(a), *old_a.shape[1:]).to(old_a.dtype).contiguous()
        out[layer + B_SUFFIX] = b.reshape(len(b), b.shape[1], *old_b.shape[2:]).to(old_b.dtype).contiguous()
    return out


def aggregation_error(exact: dict[str, torch.Tensor], applied: dict) -> float:
    """||exact - applied B @ A|| / ||exact|| over all layers (0 when the clients changed nothing)."""
    num = sum(float((delta - product(applied, layer)).pow(2).sum()) for layer, delta in exact.items())
    den = sum(float(delta.pow(2).sum()) for delta in exact.values())
    return (num / den) ** 0.5 if den > 0 else 0.0


def sent_keys(state: dict, aggregation: str) -> dict:
    """What travels: with ``ffa`` the frozen A factors stay home (every party has them)."""
    if aggregation == "ffa":
        return {k: v for k, v in state.items() if not k.endswith(A_SUFFIX)}
    return state
