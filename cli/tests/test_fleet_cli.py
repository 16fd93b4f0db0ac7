"""`llorch certs`, the fleet parts of `llorch up` and `llorch join`'s settings (issue 10).

The processes themselves run in `ci/harness/tests/test_join.py`; here: certificates
from the fleet CA that OpenSSL accepts for the addresses they name, keys kept private,
the join token kept across restarts, the pool manager's YAML a join writes (valid for
pool-managerd, without the token), the refusals before anything starts, and the
progress lines.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
import yaml
from catalog_core import write_tiny_model
from cryptography import x509
from cryptography.x509.oid import NameOID
from llorch import certs, join, up
from llorch.__main__ import main
from llorch.daemons import LogTail, last_problem, problem_line
from pool_managerd.config import load_config


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _join_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    join.add_parser(parser.add_subparsers())
    return parser.parse_args(["join", *argv])


def _handshake(ca_file: Path, cert_file: Path, key_file: Path, name: str) -> str:
    """A TLS handshake over a socket pair: the server presents the certificate, the
    client checks it against the CA for `name`; the client's view of the peer's name."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(ca_file))
    near, far = socket.socketpair()
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(far, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(near, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
    finally:
        near.close()
        thread.join(timeout=10)
        far.close()
    assert not failures, failures
    assert der is not None
    subject = x509.load_der_x509_certificate(der).subject
    return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_certs_host_without_a_fleet_ca_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["certs", "host", "h2", "--address", "10.0.0.2", "--state-dir", str(tmp_path)]
    assert main(argv) == 1
    assert "no fleet CA" in capsys.readouterr().err
    assert not (tmp_path / "tls" / "hosts").exists()


def test_a_host_certificate_from_the_fleet_ca_passes_a_tls_handshake_for_its_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = certs.ensure_ca(tmp_path)
    argv = ["certs", "host", "h2", "--address", "127.0.0.1", "--address", "localhost"]
    assert main([*argv, "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    cert_file, key_file = tmp_path / "tls/hosts/h2.pem", tmp_path / "tls/hosts/h2.key"
    assert str(cert_file) in out and str(key_file) in out and str(ca.cert_file) in out
    assert "PRIVATE KEY" not in out
    assert _mode(key_file) == 0o600 and _mode(tmp_path / "tls/ca.key") == 0o600
    assert _mode(tmp_path / "tls") == 0o700
    issued = x509.load_pem_x509_certificate(cert_file.read_bytes())
    issued.verify_directly_issued_by(ca.cert)
    assert certs.names_in(issued) == {"127.0.0.1", "localhost"}
    assert _handshake(ca.cert_file, cert_file, key_file, "127.0.0.1") == "h2"
    assert _handshake(ca.cert_file, cert_file, key_file, "localhost") == "h2"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca.cert_file, cert_file, key_file, "10.9.9.9")


def test_an_orchestrator_certificate_is_kept_while_it_fits_and_reissued_when_it_does_not(
    tmp_path: Path,
) -> None:
    ca = certs.ensure_ca(tmp_path)
    assert certs.ensure_ca(tmp_path).cert == ca.cert  # made once
    cert_file = certs.tls_dir(tmp_path) / "orchestrator.pem"
    certs.ensure_leaf(ca, cert_file, "llorch orchestrator", ["10.0.0.1"])
    first = cert_file.read_bytes()
    certs.ensure_leaf(ca, cert_file, "llorch orchestrator", ["10.0.0.1"])
    assert cert_file.read_bytes() == first
    certs.ensure_leaf(ca, cert_file, "llorch orchestrator", ["10.0.0.7"])
    moved = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert certs.names_in(moved) == {"10.0.0.7"}
    for name in ("ca.pem", "ca.key"):
        (certs.tls_dir(tmp_path) / name).unlink()
    other = certs.ensure_ca(tmp_path)
    certs.ensure_leaf(other, cert_file, "llorch orchestrator", ["10.0.0.7"])
    x509.load_pem_x509_certificate(cert_file.read_bytes()).verify_directly_issued_by(other.cert)


def test_the_join_token_is_kept_across_restarts_until_rotated(tmp_path: Path) -> None:
    token = up._join_token(tmp_path, rotate=False)
    assert len(token) >= 32 and _mode(tmp_path / "join-token") == 0o600
    assert up._join_token(tmp_path, rotate=False) == token
    rotated = up._join_token(tmp_path, rotate=True)
    assert rotated != token and up._join_token(tmp_path, rotate=False) == rotated


def test_up_refuses_a_wildcard_listen_address_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", "--listen", "0.0.0.0", "--state-dir", str(tmp_path)]) == 2
    assert "the address other hosts dial" in capsys.readouterr().err
    assert not (tmp_path / "up").exists()


@pytest.fixture
def host_files(tmp_path: Path) -> dict[str, Path]:
    certs.ensure_ca(tmp_path / "orchestrator")
    cert, key = certs.issue_host(tmp_path / "orchestrator", "h2", ["10.0.0.2"])
    (tmp_path / "models").mkdir()
    model = write_tiny_model(tmp_path / "models" / "Tiny Model.gguf")
    return {"ca": tmp_path / "orchestrator/tls/ca.pem", "cert": cert, "key": key, "model": model}


def test_a_join_writes_one_pool_named_after_host_and_model_that_pool_managerd_accepts(
    tmp_path: Path, host_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _join_args(
        "10.0.0.1:8090",
        "--token",
        "the-secret-token",
        *("--ca", str(host_files["ca"]), "--cert", str(host_files["cert"])),
        *("--key", str(host_files["key"]), "--model", str(host_files["model"])),
        *("--host-id", "h2", "--threads", "2"),
    )
    settings = join.manager_settings(args, tmp_path / "join")
    assert settings["orchestrator"] == "10.0.0.1:8090" and settings["host_id"] == "h2"
    (pool,) = settings["pools"]
    assert pool["id"] == "h2-tiny-model" and pool["aliases"] == ["tiny-model"]
    assert pool["engine"] == "llamacpp-inproc" and pool["threads"] == 2
    assert settings["status_file"] == str(tmp_path / "join" / "status.json")
    written = tmp_path / "pool-managerd.yaml"
    written.write_text(yaml.safe_dump(settings))
    assert "the-secret-token" not in written.read_text()
    monkeypatch.setenv("LLORCH_JOIN_TOKEN", "the-secret-token")
    config = load_config(written)
    assert config.tls is not None and config.tls.cert_file == host_files["cert"]
    assert config.status_file == tmp_path / "join" / "status.json"
    assert join._check_link(settings) == ""


def test_a_join_with_a_config_file_fills_only_what_the_file_leaves_out(
    tmp_path: Path, host_files: dict[str, Path]
) -> None:
    given = {
        "host_id": "gpu-7",
        "tls": {"ca_file": str(host_files["ca"])},
        "pools": [{"id": "mine", "model": str(host_files["model"])}],
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(given))
    args = _join_args(
        "[fd00::1]",
        *("--token", "t", "--config", str(path), "--host-id", "other"),
        *("--cert", str(host_files["cert"]), "--key", str(host_files["key"])),
        *("--advertise-host", "fd00::2"),
    )
    settings = join.manager_settings(args, tmp_path / "join")
    assert settings["host_id"] == "gpu-7" and settings["pools"] == given["pools"]
    assert settings["tls"] == given["tls"]  # the file's own, not the flags'
    assert settings["orchestrator"] == "[fd00::1]:8090" and settings["advertise_host"] == "fd00::2"
    assert "without" not in join._check_link({**settings, "insecure": True})
    assert "no host certificate" in join._check_link(settings)


def test_a_join_that_cannot_work_is_refused_with_the_reason_before_anything_starts(
    tmp_path: Path,
    host_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLORCH_JOIN_TOKEN", raising=False)
    base = ["join", "10.0.0.1:8090", "--model", str(host_files["model"])]
    base += ["--state-dir", str(tmp_path / "state")]
    assert main(base) == 2
    assert "no join token" in capsys.readouterr().err
    token = ["--token", "tok-SECRET"]
    assert main([*base, *token, "--ca", str(host_files["ca"])]) == 2
    err = capsys.readouterr().err
    assert "no host certificate" in err and "llorch certs host" in err and "SECRET" not in err
    assert main([*base, *token, "--cert", str(host_files["cert"])]) == 2
    assert "--cert and --key go together" in capsys.readouterr().err
    assert main(["join", "10.0.0.1:8090", *token, "--model", "/no/such.gguf"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_progress_lines_say_what_changed_and_ready_needs_the_link_and_every_static_pool() -> None:
    start = join.Status()
    loading = join.Status(joined=False, pools={"p": "loading"})
    ready = join.Status(joined=True, pools={"p": "ready"})
    assert join.narrate(start, loading, "o:1") == ["pool p loading"]
    assert join.narrate(loading, ready, "o:1") == ["joined o:1", "pool p ready"]
    assert join.narrate(ready, join.Status(False, {"p": "ready"}), "o:1") == [
        "lost the link to o:1"
    ]
    assert ready.ready and not loading.ready and not join.Status(False, {}).ready
    assert join.Status(joined=True).ready  # a host without static pools, once joined
    assert not join.Status(True, {"p": "ready", "q": "starting"}).ready


def test_a_status_file_is_read_once_complete(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    assert join.Status.read(path) is None
    path.write_text('{"joined": tr')
    assert join.Status.read(path) is None
    path.write_text(json.dumps({"joined": True, "pools": {"p": "ready"}}))
    assert join.Status.read(path) == join.Status(True, {"p": "ready"})


def test_the_last_problem_of_a_log_is_its_last_warning_error_or_plain_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "d.log"
    lines = [
        {"level": "info", "human": "starting"},
        {"level": "error", "human": "control link failed: UNAUTHENTICATED"},
        {"level": "info", "human": "retrying"},
    ]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert last_problem(log) == "control link failed: UNAUTHENTICATED"
    assert last_problem(log, since=log.stat().st_size) == ""
    assert problem_line("I1206 19:48:54.769365   10918 ssl.cc:2563] Handshake failed") == ""
    tail = LogTail.at_end(log)
    with log.open("a") as out:
        out.write("pool-managerd: invalid configuration: tls.ca_file: no such file\npart")
    assert tail.read() == ["pool-managerd: invalid configuration: tls.ca_file: no such file"]
    assert tail.read() == []
    assert last_problem(log).startswith("part")
