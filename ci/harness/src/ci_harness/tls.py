"""`FleetCerts`: a certificate authority and per-host certificates for one test fleet.

Made fresh for each test with `trustme` (never checked in): the orchestrator's
certificate names the addresses pool managers dial (the bridge address, loopback); each
host's certificate names that host's own address, which its engines serve with and its
pool manager presents as its client certificate. Files go under `root` and the returned
mappings are the daemons' `tls:` sections. Private keys are registered for the
session's log scan (`secret_scan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from ci_harness import secret_scan

__all__ = ["FleetCerts"]


@dataclass
class FleetCerts:
    root: Path
    orchestrator_names: tuple[str, ...]
    client_auth: bool = True  # the control link asks pool managers for a certificate
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def _issue(self, name: str, *identities: str) -> dict[str, str]:
        cert = self.ca.issue_cert(*identities)
        cert_file, key_file = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert.private_key_pem.write_to_path(str(key_file))
        for line in secret_scan.pem_private_lines(cert.private_key_pem.bytes().decode()):
            secret_scan.register(line, "TLS private key material")
        for index, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(cert_file), append=index > 0)
        return {"cert_file": str(cert_file), "key_file": str(key_file)}

    def orchestrator_tls(self) -> dict[str, Any]:
        files = self._issue("orchestrator", *self.orchestrator_names)
        return {**files, "ca_file": str(self.ca_file), "client_auth": self.client_auth}

    def host_tls(self, host_id: str, address: str) -> dict[str, Any]:
        """A host's `tls:` section (without client_auth, which is the caller's choice)."""
        return {**self._issue(host_id, address), "ca_file": str(self.ca_file)}

    def foreign_host_tls(self, host_id: str, address: str) -> dict[str, Any]:
        """A certificate for the host from *another* CA (the orchestrator's CA is still
        trusted): what an impostor would present."""
        other = FleetCerts(self.root / "foreign", self.orchestrator_names, ca=trustme.CA())
        files = other._issue(host_id, address)
        return {**files, "ca_file": str(self.ca_file)}
