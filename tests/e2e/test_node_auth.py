"""Authenticated SuperNodes in `fedfuse deploy local --tls`: the key pairs and how the processes
are started with them. No process is started here; `tests/test_deployment.py` checks on a live
deployment that the SuperLink lets the registered nodes in and refuses the others.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import bytes_to_public_key, public_key_to_bytes, uses_nist_ec_curve

from fedfuse.deploy.local import LocalDeployment
from fedfuse.deploy.tls import make_node_key


def test_node_keys_are_what_flower_reads(tmp_path):
    """The private key as `flower-supernode --auth-supernode-private-key` loads it (an OpenSSH EC
    key), the public key as `flwr supernode register` loads it, and the two belong together."""
    paths = make_node_key(tmp_path, "supernode0")
    private = load_ssh_private_key(paths["key"].read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and uses_nist_ec_curve(private.public_key())
    assert bytes_to_public_key(try_load_public_key(paths["pub"])) == private.public_key()
    assert stat.S_IMODE(paths["key"].stat().st_mode) == 0o600


def test_a_node_keeps_its_key_across_restarts_of_the_deployment(tmp_path):
    first = make_node_key(tmp_path, "supernode0")["key"].read_bytes()
    assert make_node_key(tmp_path, "supernode0")["key"].read_bytes() == first
    assert make_node_key(tmp_path, "supernode1")["key"].read_bytes() != first


def test_tls_deployment_authenticates_each_supernode_with_a_key_of_its_own(tmp_path):
    deployment = LocalDeployment(tmp_path, nodes=2, tls=True)
    assert "--enable-supernode-auth" in deployment.superlink().argv
    keys = [argv_value(deployment.supernode(k).argv, "--auth-supernode-private-key") for k in range(2)]
    assert keys == [str(deployment.node_keys[k]["key"]) for k in range(2)]
    public = {public_key_to_bytes(load_ssh_private_key(Path(key).read_bytes(), None).public_key()) for key in keys}
    assert len(public) == 2


def test_insecure_deployment_has_no_node_authentication(tmp_path):
    """Flower allows node authentication only over TLS: without it, nothing to register."""
    deployment = LocalDeployment(tmp_path, nodes=2, tls=False)
    assert not deployment.node_auth and not deployment.node_keys
    assert "--enable-supernode-auth" not in deployment.superlink().argv
    assert "--auth-supernode-private-key" not in deployment.supernode(0).argv


def argv_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]
