"""The fleet's own certificates (FLT-02), for TLS without an operator PKI.

    llorch certs host HOST_ID --address ADDR [--address ADDR ...] [--state-dir DIR]

Everything lives under `<state-dir>/tls/`: the fleet CA (`ca.pem`, `ca.key`), the
orchestrator's certificate (`orchestrator.pem`, `.key`, made by `llorch up --listen`
for the address it listens on) and host certificates (`hosts/HOST_ID.pem`, `.key`).
`llorch up --listen` makes the CA once and keeps it; `llorch certs host` issues a
host's certificate from it: the host presents it on the control link (mutual TLS) and
its engines serve TLS with it, so it names the addresses the orchestrator dials the
host at. Private keys are written mode 0600 (the folder 0700), atomically; no key or
certificate body is ever printed. Keys are ECDSA P-256; leaf certificates carry both
server and client authentication, so one certificate serves both ends of a link.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from llorch.state import default_state_dir

__all__ = [
    "CertError",
    "FleetCa",
    "add_parser",
    "ensure_ca",
    "ensure_leaf",
    "issue_host",
    "load_ca",
    "names_in",
    "run",
    "tls_dir",
    "write_file",
]

EXIT_OK, EXIT_FAILED = 0, 1
_CA_DAYS, _LEAF_DAYS, _RENEW_DAYS = 3650, 825, 30
_HOST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CertError(Exception):
    """A certificate cannot be made or used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class FleetCa:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path


def tls_dir(state_dir: Path) -> Path:
    return state_dir / "tls"


# -- files ---------------------------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` atomically; the new file has `mode` from its creation on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    partial.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _save(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_file: Path) -> Path:
    """Write the certificate and its key beside it (`.key`, 0600); the key's path."""
    key_file = cert_file.with_suffix(".key")
    write_file(key_file, _key_pem(key), 0o600)
    write_file(cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return key_file


# -- certificates --------------------------------------------------------------------------


def _general_name(address: str) -> x509.GeneralName:
    bare = address.strip("[]")
    try:
        return x509.IPAddress(ipaddress.ip_address(bare))
    except ValueError:
        return x509.DNSName(bare)


def _builder(subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey, days: int) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llorch fleet CA")])
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder("llorch fleet CA", name, key.public_key(), _CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(
    ca: FleetCa, subject: str, addresses: list[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    purposes = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    issuer_key = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    cert = (
        _builder(subject, ca.cert.subject, key.public_key(), _LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        .add_extension(issuer_key, critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(a) for a in addresses]), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def names_in(cert: x509.Certificate) -> set[str]:
    """The addresses and DNS names a certificate is valid for."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return found | set(names.get_values_for_type(x509.DNSName))


def _still_good(cert_file: Path, ca: FleetCa, addresses: list[str]) -> bool:
    """The certificate exists, comes from this CA, names every address and is not near
    its end (then it is kept, so the files operators copied stay valid)."""
    if not cert_file.is_file() or not cert_file.with_suffix(".key").is_file():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    wanted = {str(_general_name(a).value) for a in addresses}
    renew = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=_RENEW_DAYS)
    return wanted <= names_in(cert) and cert.not_valid_after_utc > renew


# -- what the commands use -----------------------------------------------------------------


def load_ca(state_dir: Path) -> FleetCa:
    """The fleet CA of a state directory (CertError when there is none)."""
    root = tls_dir(state_dir)
    cert_file, key_file = root / "ca.pem", root / "ca.key"
    if not cert_file.is_file() or not key_file.is_file():
        raise CertError(
            f"no fleet CA under {root}: `llorch up --listen ADDR --state-dir {state_dir}` "
            "makes it (or give the --state-dir that llorch up uses)"
        )
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_file}: not a key this CLI made")
    return FleetCa(x509.load_pem_x509_certificate(cert_file.read_bytes()), key, cert_file)


def ensure_ca(state_dir: Path) -> FleetCa:
    """The fleet CA, made on first use and kept (every host certificate hangs on it)."""
    try:
        return load_ca(state_dir)
    except CertError:
        pass
    cert, key = _new_ca()
    cert_file = tls_dir(state_dir) / "ca.pem"
    _save(cert, key, cert_file)
    return FleetCa(cert, key, cert_file)


def ensure_leaf(ca: FleetCa, cert_file: Path, subject: str, addresses: list[str]) -> Path:
    """A certificate from `ca` naming `addresses` at `cert_file` (kept when it still
    fits, made otherwise); the path of its key."""
    if not _still_good(cert_file, ca, addresses):
        cert, key = _new_leaf(ca, subject, addresses)
        _save(cert, key, cert_file)
    return cert_file.with_suffix(".key")


def issue_host(state_dir: Path, host_id: str, addresses: list[str]) -> tuple[Path, Path]:
    """A new certificate and key for a host, from the fleet CA: (cert_file, key_file)."""
    if not _HOST_ID.match(host_id):
        raise CertError(f"host id {host_id!r} must match {_HOST_ID.pattern}")
    ca = load_ca(state_dir)
    cert, key = _new_leaf(ca, host_id, addresses)
    cert_file = tls_dir(state_dir) / "hosts" / f"{host_id}.pem"
    return cert_file, _save(cert, key, cert_file)


# -- the command ---------------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("certs", help="issue certificates from the fleet CA")
    kinds = parser.add_subparsers(dest="certs_command", required=True)
    host = kinds.add_parser("host", help="a host certificate (mutual TLS, engines' TLS)")
    host.add_argument("host_id", help="the host's id (its pool manager's host_id)")
    host.add_argument(
        "--address",
        action="append",
        required=True,
        help="an address or name the orchestrator reaches the host at (repeatable)",
    )
    host.add_argument("--state-dir", type=Path, default=None, help="default: $LLORCH_STATE_DIR")
    host.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
    try:
        cert_file, key_file = issue_host(state_dir, args.host_id, list(args.address))
    except (CertError, OSError) as exc:
        print(f"llorch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    ca_file = tls_dir(state_dir) / "ca.pem"
    print(
        f"issued a certificate for host {args.host_id} ({', '.join(args.address)})\n"
        f"copy these to the host (the key is a secret: keep it mode 0600):\n"
        f"  {ca_file}\n  {cert_file}\n  {key_file}\n"
        f"and join with: --ca ca.pem --cert {cert_file.name} --key {key_file.name}"
    )
    return EXIT_OK
