"""Model and local training: the shared DDPM recipe plus this protocol's own loss term. No flwr."""

import torch

from fedfuse.api import Ema, build_scheduler, build_unet, train  # noqa: F401  (Ema, build_unet: the task API)


def proximal_term(anchor: dict[str, torch.Tensor], mu: float):
    """FedProx's mu/2 * ||w - w_global||^2: keeps a client near the model it was sent."""

    def term(module) -> torch.Tensor:
        params = dict(module.named_parameters())
        return mu / 2 * sum(((params[k] - w.to(params[k].device)) ** 2).sum() for k, w in anchor.items())

    return term


def local_train(model, data, cfg, generator, resources, flops, rnd: int, dp=None) -> float:
    """``cfg.local_steps`` DDPM steps on the client's data; the warm-up continues across rounds.
    ``dp``: the harness's DP-SGD for these steps (``run.dp_sgd(round)``; None without DP). The
    proximal term depends on no private image, so DP-SGD leaves it unclipped."""
    anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
    extra = proximal_term(anchor, cfg.proximal_mu) if cfg.proximal_mu > 0 else None
    return train(model, build_scheduler(cfg.timesteps), data, cfg.local_steps, cfg.recipe, generator,
                 resources, flops, conditional=cfg.conditional, start_step=(rnd - 1) * cfg.local_steps,
                 extra_loss=extra, dp=dp)


def update_norms(sent: dict[str, torch.Tensor], trained: dict[str, torch.Tensor]):
    """The L2 norm of a client's update, per tensor (a float32 tensor)."""
    return torch.stack([(trained[k].float() - v.float()).norm() for k, v in sent.items()])
