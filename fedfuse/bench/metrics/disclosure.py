"""Disclosure: how close what a client shares (or what the server reconstructs from it) is to
the client's private images — the measure CollaFuse reports, offered to every protocol alike.

For each shared image: the mean squared error to its nearest private image (in pixels), and the
SSIM to that nearest image; plus KID between the shared set and the private set in the dataset's
feature space. Identical images give MSE 0 and SSIM 1; pure noise gives a large MSE and SSIM ~0.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def nearest(shared: torch.Tensor, private: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(per shared image: MSE to its nearest private image, that image's index)."""
    flat_p = private.flatten(1)
    best, index = [], []
    for batch in shared.flatten(1).split(batch_size):
        mse = torch.cdist(batch, flat_p).pow(2) / flat_p.shape[1]
        value, idx = mse.min(dim=1)
        best.append(value)
        index.append(idx)
    return torch.cat(best), torch.cat(index)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    kernel = 7 if min(a.shape[-2:]) >= 16 else 3
    return structural_similarity_index_measure(a.clamp(-1, 1), b, data_range=2.0, kernel_size=kernel,
                                               reduction="none")


def disclosure(shared: torch.Tensor, private: torch.Tensor, net=None, kid_sample: int = 2000) -> dict:
    """Disclosure figures of ``shared`` (N, C, H, W) against all ``private`` images (M, C, H, W),
    both in [-1, 1]; KID against a fixed random ``kid_sample`` of them."""
    mse, idx = nearest(shared.float(), private.float())
    out = {"nn_mse": float(mse.mean()), "nn_ssim": float(ssim(shared.float(), private[idx].float()).mean())}
    if net is not None and len(shared) >= 4 and len(private) >= 4:
        from fedfuse.bench.metrics.quality import embed, fid_kid

        pick = torch.randperm(len(private), generator=torch.Generator().manual_seed(0))[:kid_sample]
        out["kid_to_private"] = fid_kid(embed(net, private[pick]), embed(net, shared.clamp(-1, 1)), kid_subsets=20)["kid"]
    return out


@torch.no_grad()
def set_distances(sets: dict[str, torch.Tensor], private: torch.Tensor, heldout: torch.Tensor, net,
                  sample: int = 2000) -> dict:
    """FID and KID of each named image set against ``private`` (a fixed random ``sample`` of
    them) and against ``heldout`` images of the same classes: a set that is closer to the private
    images than to held-out ones of the same classes reveals those images, not just their kind."""
    from fedfuse.bench.metrics.quality import embed, fid_kid

    pick = torch.randperm(len(private), generator=torch.Generator().manual_seed(0))[:sample]
    references = {"": embed(net, private[pick]), "_heldout": embed(net, heldout)}
    out = {}
    for name, images in sets.items():
        features = embed(net, images.clamp(-1, 1))
        for suffix, reference in references.items():
            distance = fid_kid(reference, features, kid_subsets=20)
            out[f"disclosure_fid_{name}{suffix}"] = distance["fid"]
            out[f"disclosure_kid_{name}{suffix}"] = distance["kid"]
    return out
