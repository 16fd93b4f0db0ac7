"""Addresses across hosts (`specs.net`) and `tls:` sections (`specs.tls`), FLT-01/02."""

from __future__ import annotations

from pathlib import Path

import pytest
from specs.net import AddressError, host_port, is_loopback, is_wildcard, split_host_port
from specs.tls import TlsConfigError, parse_tls


@pytest.mark.parametrize(
    ("host", "port", "written"),
    [
        ("10.0.0.2", 8090, "10.0.0.2:8090"),
        ("fd00::2", 8090, "[fd00::2]:8090"),
        ("[fd00::2]", 1, "[fd00::2]:1"),
        ("gpu-host-7.internal", 443, "gpu-host-7.internal:443"),
    ],
)
def test_host_port_brackets_ipv6_and_round_trips(host: str, port: int, written: str) -> None:
    assert host_port(host, port) == written
    assert split_host_port(written) == (host.strip("[]"), port)


@pytest.mark.parametrize(
    ("address", "complaint"),
    [
        ("fd00::2:8090", "brackets"),
        ("[fd00::2]8090", "form"),
        ("host", "host:port"),
        (":8090", "host:port"),
        ("host:0", "port"),
        ("host:99999", "port"),
        ("host:http", "port"),
    ],
)
def test_unreadable_addresses_are_refused_saying_why(address: str, complaint: str) -> None:
    with pytest.raises(AddressError, match=complaint):
        split_host_port(address)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("10.77.0.2", False),
        ("fd00::2", False),
        ("pool-a", False),
        ("0.0.0.0", False),
    ],
)
def test_loopback_is_judged_by_address_or_the_localhost_name(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_any_address_of_both_families_is_a_wildcard() -> None:
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and not is_wildcard("10.0.0.1")


def test_a_tls_section_reads_its_files_and_checks_they_exist(tmp_path: Path) -> None:
    for name in ("ca.pem", "host.pem", "host.key"):
        (tmp_path / name).write_text(name)
    files = parse_tls(
        {
            "ca_file": str(tmp_path / "ca.pem"),
            "cert_file": str(tmp_path / "host.pem"),
            "key_file": str(tmp_path / "host.key"),
            "client_auth": True,
        }
    )
    assert files is not None and files.client_auth
    material = files.load()
    assert material.ca_pem == b"ca.pem" and material.has_identity
    assert "host.key" not in repr(material)  # the key never shows in a repr


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "no such file"),
        ({"cert_file": "CERT"}, "go together"),
        ({"client_auth": True}, "needs ca_file"),
        ({"client_auth": "yes"}, "true or false"),
        ({"cafile": "x"}, "unknown settings cafile"),
        ("ca.pem", "mapping"),
    ],
)
def test_unusable_tls_sections_are_refused_naming_the_setting(
    tmp_path: Path, section: object, complaint: str
) -> None:
    (tmp_path / "cert.pem").write_text("x")
    if isinstance(section, dict) and section.get("cert_file") == "CERT":
        section = {"cert_file": str(tmp_path / "cert.pem")}
    with pytest.raises(TlsConfigError, match=complaint):
        parse_tls(section)


def test_no_tls_section_means_no_tls() -> None:
    assert parse_tls(None) is None
