"""The template's own tests: `pip install -e .` in fedfuse's venv, then `pytest tests`."""

import torch

from fedfuse.api import build_unet, check_protocol
from fedfuse_fedavgm import task


def test_proximal_term_is_zero_at_the_anchor_and_grows_away_from_it():
    model = build_unet((1, 8, 8), "tiny", seed=0)
    anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
    term = task.proximal_term(anchor, mu=0.1)
    assert term(model).item() == 0.0
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert term(model).item() > 0


def test_fedavgm_keeps_the_plugin_contract():
    """Runs the protocol twice on a tiny cell (about a minute on 2 CPU cores)."""
    report = check_protocol("fedavgm", {"proximal_mu": 0.01})
    assert report["ok"], [r for r in report["rules"] if not r["ok"]]
