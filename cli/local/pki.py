"""Certificates and keys for the local apiserver and KWOK's kubelet server.

We make our own CA rather than letting kube-apiserver self-sign, so the
kubeconfig can pin a CA and clients verify TLS like against a real cluster.
The same CA signs the serving certificate of KWOK's kubelet endpoint (on
127.0.0.1), and the apiserver verifies it with ``--kubelet-certificate-authority``
when it fetches pod logs, as it would verify a real kubelet.

The CA key is kept (mode 600, in the cluster's own directory) because the real
node's kubelets get serving certificates for their node IPs when they start,
and the apiserver presents a client certificate of this CA to them, so they
authenticate it by x509 and authorise it by webhook, as a kubeadm cluster does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import astuple, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)  # a local cluster never lives this long
_KEY_BITS = 2048  # what kubeadm uses; enough for loopback and fast to generate


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    kubelet_cert: Path
    """Serving certificate of KWOK's kubelet endpoint: SAN 127.0.0.1, the node InternalIP."""
    kubelet_key: Path
    ca_key: Path
    kubelet_client_cert: Path
    """The apiserver's client certificate for kubelets (group system:masters)."""
    kubelet_client_key: Path


def ensure_pki(directory: Path) -> Pki:
    """Create the CA, the apiserver and kubelet serving pairs and the service-account key once.

    A directory missing any file (one made before a pair existed, or before
    the CA key was kept) gets a whole new set.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        kubelet_cert=directory / "kubelet.crt",
        kubelet_key=directory / "kubelet.key",
        ca_key=directory / "ca.key",
        kubelet_client_cert=directory / "apiserver-kubelet-client.crt",
        kubelet_client_key=directory / "apiserver-kubelet-client.key",
    )
    if all(path.exists() for path in astuple(pki)):
        return pki
    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "berth-local-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key, server_cert = _serving_pair(
        "kube-apiserver",
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),  # first IP of the service range
        ],
        ca_name,
        ca_key,
    )
    # The apiserver dials a node's InternalIP, which KWOK reports as 127.0.0.1.
    kubelet_key, kubelet_cert = _serving_pair(
        "kwok-kubelet",
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ca_name,
        ca_key,
    )
    client_key = _new_key()
    client_cert = (
        _builder(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
                ]
            ),
            ca_name,
            client_key,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = _new_key()
    _write(pki.ca_key, _private_pem(ca_key))
    _write(pki.kubelet_client_cert, client_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.kubelet_client_key, _private_pem(client_key))
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.serving_key, _private_pem(server_key))
    _write(pki.kubelet_cert, kubelet_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.kubelet_key, _private_pem(kubelet_key))
    _write(pki.sa_key, _private_pem(sa_key))
    _write(
        pki.sa_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki


def issue_serving_pair(pki: Pki, common_name: str, ips: list[str], cert: Path, key: Path) -> None:
    """A serving pair signed by the cluster CA for ``ips`` (a real kubelet's node IPs)."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    ca_name = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()).subject
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    new_key, new_cert = _serving_pair(common_name, sans, ca_name, ca_key)
    _write(cert, new_cert.public_bytes(serialization.Encoding.PEM))
    _write(key, _private_pem(new_key))


def _serving_pair(
    common_name: str,
    sans: list[x509.GeneralName],
    ca_name: x509.Name,
    ca_key: rsa.RSAPrivateKey,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _new_key()
    cert = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), ca_name, key)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + _VALIDITY)
    )


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)
