"""A self-signed CA and a SuperLink certificate it signs, for trying TLS deployments; and
the SuperNodes' key pairs for Flower's node authentication.

For production, use certificates from your own CA; these are for one machine or a lab.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 30


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedfuse"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, cert=None, key=None) -> None:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)


def make_certificates(directory: Path, hosts: list[str]) -> dict[str, Path]:
    """``ca.pem`` (give it to SuperNodes and ``fedfuse run``), ``server.pem``/``server.key``
    (the SuperLink's, valid for ``hosts``: names or IP addresses clients dial)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (_builder(_name("fedfuse local CA"), _name("fedfuse local CA"), ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (_builder(_name(hosts[0]), ca.subject, server_key)
              .add_extension(_san(hosts), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
    paths = {name: directory / name for name in ("ca.pem", "server.pem", "server.key")}
    _write(paths["ca.pem"], cert=ca)
    _write(paths["server.pem"], cert=server)
    _write(paths["server.key"], key=server_key)
    return paths


def make_node_key(directory: Path, name: str) -> dict[str, Path]:
    """A SuperNode's identity for Flower's node authentication: ``<name>.key`` (its private key,
    for ``flower-supernode --auth-supernode-private-key``; it stays with the node) and
    ``<name>.pub`` (for ``flwr supernode register`` on the SuperLink's side).

    Flower reads both in OpenSSH format and wants an EC key on a NIST curve; P-384 is the
    curve its documentation uses (``ssh-keygen -t ecdsa -b 384``). An existing pair is kept,
    so that a node keeps its identity when the deployment restarts on the same directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"key": directory / f"{name}.key", "pub": directory / f"{name}.pub"}
    if paths["key"].is_file() and paths["pub"].is_file():
        return paths
    key = ec.generate_private_key(ec.SECP384R1())
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    paths["pub"].write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                           serialization.PublicFormat.OpenSSH) + b"\n")
    return paths
