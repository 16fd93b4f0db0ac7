"""TLS settings shared by the daemons (FLT-02): which files, and the PEM bytes read once.

A daemon's YAML names a `tls:` section:

    tls:
      ca_file: /etc/llorch/ca.pem      # verifies the other side's certificate
      cert_file: /etc/llorch/host.pem  # this side's certificate (chain), PEM
      key_file: /etc/llorch/host.key   # its private key, PEM (a secret: never logged)
      client_auth: false               # servers: require a client certificate (mutual TLS)

`TlsFiles` is that section, checked (files present, cert and key given together);
`TlsMaterial` holds their bytes, read once at start. How the bytes become gRPC
credentials or an `ssl.SSLContext` is up to each link's own module; this one imports
neither grpc nor ssl. `ClientTls` is what a client needs to dial one TLS endpoint: the
roots it trusts, its own certificate when the server asks for one, and the name the
server's certificate must carry (the dialled host by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specs.settings import Settings

__all__ = [
    "ClientTls",
    "TlsConfigError",
    "TlsFiles",
    "TlsMaterial",
    "TlsSettings",
    "parse_tls",
]


class TlsConfigError(ValueError):
    """A `tls:` section that cannot be used; the message names the setting."""


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = field(default=b"", repr=False)
    client_auth: bool = False

    @property
    def has_identity(self) -> bool:
        return bool(self.cert_pem and self.key_pem)

    def client(self, server_name: str = "") -> ClientTls:
        """Credentials for dialling a server that presents a certificate from `ca_pem`."""
        return ClientTls(self.ca_pem, self.cert_pem, self.key_pem, server_name)


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How to dial one TLS endpoint. `key_pem` is a secret."""

    ca_pem: bytes
    cert_pem: bytes = b""
    key_pem: bytes = field(default=b"", repr=False)
    server_name: str = ""  # the name to check in the server's certificate; "" = dialled host


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth: bool = False

    def load(self) -> TlsMaterial:
        """Read the files (OSError names the missing one)."""
        return TlsMaterial(
            ca_pem=self.ca_file.read_bytes() if self.ca_file else b"",
            cert_pem=self.cert_file.read_bytes() if self.cert_file else b"",
            key_pem=self.key_file.read_bytes() if self.key_file else b"",
            client_auth=self.client_auth,
        )


class TlsSettings(Settings):
    """TLS files (FLT-02): the CA that verifies the other side, this side's certificate
    and key (given together), and whether servers require client certificates."""

    ca_file: str | None = None
    """PEM file of the CA that verifies the other side's certificate."""
    cert_file: str | None = None
    """This side's certificate (chain), PEM; goes with `key_file`."""
    key_file: str | None = None
    """This side's private key, PEM (a secret: never logged); goes with `cert_file`."""
    client_auth: bool = False
    """Servers require a client certificate from `ca_file` (mutual TLS)."""


def parse_tls(raw: Any, where: str = "tls") -> TlsFiles | None:
    """A `tls:` mapping from YAML, or None when absent. Checks that every named file
    exists, that cert and key come together, and that `client_auth` has a CA to check
    client certificates against."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TlsConfigError(f"{where}: expected a mapping")
    known = {"ca_file", "cert_file", "key_file", "client_auth"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TlsConfigError(f"{where}: unknown settings {', '.join(unknown)}")
    paths: dict[str, Path | None] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise TlsConfigError(f"{where}.{name}: expected a path")
        path = Path(value).expanduser() if value else None
        if path is not None and not path.is_file():
            raise TlsConfigError(f"{where}.{name}: no such file {path}")
        paths[name] = path
    client_auth = raw.get("client_auth", False)
    if not isinstance(client_auth, bool):
        raise TlsConfigError(f"{where}.client_auth: expected true or false")
    if (paths["cert_file"] is None) != (paths["key_file"] is None):
        raise TlsConfigError(f"{where}: cert_file and key_file go together")
    if client_auth and paths["ca_file"] is None:
        raise TlsConfigError(f"{where}.client_auth needs ca_file to check client certificates")
    return TlsFiles(paths["ca_file"], paths["cert_file"], paths["key_file"], client_auth)
