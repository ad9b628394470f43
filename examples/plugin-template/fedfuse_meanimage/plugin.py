from dataclasses import dataclass

from fedfuse.api import ProtocolSpec, hookimpl


@dataclass
class MeanImageConfig:
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.25


@hookimpl
def fedfuse_add_protocols():
    return [
        ProtocolSpec(
            name="mean-image", version="1", config=MeanImageConfig,
            server="fedfuse_meanimage.server_app:server",
            client_app="fedfuse_meanimage.client_app:app",
            summary="template: clients fit their mean image by SGD, the server averages (FedAvg)",
        )
    ]
