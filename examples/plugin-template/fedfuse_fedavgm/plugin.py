"""Registers the fedavgm protocol: its config and where its server loop and ClientApp live."""

from dataclasses import dataclass

from fedfuse.api import DdpmConfig, ProtocolSpec, added_later, hookimpl, require_positive


@dataclass
class FedAvgMConfig(DdpmConfig):  # model, timesteps, batch_size, lr, warmup_steps, ema_decay
    local_steps: int = 20  # optimizer steps per client per round
    server_lr: float = 1.0  # the server's step along the averaged update
    server_momentum: float = 0.9  # momentum of the server's update across rounds (0: plain FedAvg)
    proximal_mu: float = 0.0  # FedProx term mu/2 * ||w - w_global||^2 in each client's loss (0: off)
    conditional: bool = False  # a class-conditional UNet (a track that asks for classes, e.g. track-edge)
    # a client's learning rate x this per round it has trained before (per-client state; 1: off);
    # added_later: at 1 it leaves the ids of cells stored before the field existed
    client_lr_decay: float = added_later(1.0)

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "local_steps")
        if not (self.server_lr > 0 and 0 <= self.server_momentum < 1 and self.proximal_mu >= 0):
            raise ValueError("need server_lr > 0, 0 <= server_momentum < 1 and proximal_mu >= 0")
        if not 0 < self.client_lr_decay <= 1:
            raise ValueError("need 0 < client_lr_decay <= 1")


def check_reply(sent, reply, config) -> None:
    """This protocol's reply schema, on every reply (the harness already checks arrays, keys,
    shapes and num-examples): a client's count of rounds trained is a whole number >= 0, and
    >= 1 once it has trained. A ValueError fails the cell naming the client."""
    for name in ("metrics", "stats"):
        if name in reply and "rounds-trained" in reply[name]:
            n = reply[name]["rounds-trained"]
            if n != int(n) or n < (1 if name == "metrics" else 0):
                raise ValueError(f"'{name}/rounds-trained' is {n!r}")


@hookimpl
def fedfuse_add_protocols():
    return [
        ProtocolSpec(
            name="fedavgm", version="1", config=FedAvgMConfig,
            server="fedfuse_fedavgm.server_loop:server",
            client_app="fedfuse_fedavgm.client_app:app",
            reply_check=check_reply, partial_participation=True, dp=("record",),
            summary="template: FedAvg with server momentum (FedAvgM) of a DDPM UNet, optional proximal term",
        )
    ]
