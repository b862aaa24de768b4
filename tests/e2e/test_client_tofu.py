"""Certificates in the `ferry` client: trust on first use (refused without a terminal unless
--accept-new-cert, then remembered in ~/.config/ferry/known_hosts), a changed certificate refused
with instructions, implicit (ftps://) and explicit (ftpes://) TLS, and a long FTPS session whose
data connections all resume the control connection's TLS session (Ferry requires it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client_e2e import EXIT_CONN, ok, one_line_error, run_client, url
from ferry_e2e import tree_digest


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_first_contact_then_remembered_then_a_changed_certificate_is_refused(make_ferry, home, tmp_path):
    f = make_ferry("client-tofu")
    alice = f.add_user("alice")
    s = f.serve_tls()
    port = s.port
    u = url("ftp", port, "alice", alice.password)
    known = home / ".config" / "ferry" / "known_hosts"
    try:
        # first contact, no terminal: refused, with the fingerprint and how to accept it
        line = one_line_error(run_client(home, "ls", u), EXIT_CONN)
        assert s.fingerprint in line and "--accept-new-cert" in line and str(known) in line, line
        assert not known.exists()

        p = ok(run_client(home, "ls", "--accept-new-cert", u))
        assert s.fingerprint in p.stderr and "remembered" in p.stderr, p.stderr
        assert known.read_text() == f"127.0.0.1:{port} sha256 {s.fingerprint}\n"

        ok(run_client(home, "ls", u))  # remembered: no flag needed any more
        p = ok(run_client(home, "ls", "-q", u))
        assert p.stderr == ""
    finally:
        s.stop(timeout=15)

    # the same address with another certificate
    other = make_ferry("client-tofu-other")
    other.print_fingerprint()  # generates a different pair
    cert, key = other.data_dir / "tls" / "cert.pem", other.data_dir / "tls" / "key.pem"
    s2 = f.serve_tls(f"tls.cert={cert}", f"tls.key={key}", listen=(f"127.0.0.1:{port}",))
    try:
        assert s2.fingerprint != s.fingerprint
        line = one_line_error(run_client(home, "ls", u), EXIT_CONN)
        assert "CHANGED" in line and s.fingerprint in line and s2.fingerprint in line, line
        assert f"delete line 1 (127.0.0.1:{port}) of {known}" in line, line
        # --accept-new-cert is for new servers, never for a changed certificate
        one_line_error(run_client(home, "ls", "--accept-new-cert", u), EXIT_CONN)

        known.write_text("")  # what the message says to do
        ok(run_client(home, "ls", "--accept-new-cert", u))
        assert s2.fingerprint in known.read_text()
    finally:
        s2.stop(timeout=15)


def test_implicit_and_explicit_tls_with_a_pinned_certificate(make_ferry, home, tmp_path):
    f = make_ferry("client-ftps")
    alice = f.add_user("alice")
    s = f.serve_tls(listen_implicit=("127.0.0.1:0",))
    try:
        tree = tmp_path / "site"
        (tree / "img").mkdir(parents=True)
        for i in range(20):  # 20 data connections, each resuming the control session
            (tree / "img" / f"p{i}.txt").write_text(f"page {i}\n" * (i + 1))
        ftps = url("ftps", s.ftps_port, "alice", alice.password)
        ok(run_client(home, "ls", "--accept-new-cert", ftps))
        p = ok(run_client(home, "put", "-r", str(tree), ftps))
        assert p.stdout.count("SHA-256 verified") == 20, p.stdout
        assert tree_digest(alice.home / "site") == tree_digest(tree)

        ftpes = url("ftpes", s.port, "alice", alice.password, "site")
        ok(run_client(home, "ls", "--accept-new-cert", ftpes))
        out = tmp_path / "out"
        p = ok(run_client(home, "get", "-r", ftpes, str(out)))
        assert p.stdout.count("SHA-256 verified") == 20, p.stdout
        assert tree_digest(out) == tree_digest(tree)
    finally:
        s.stop(timeout=15)


def test_ca_file_replaces_trust_on_first_use(make_ferry, home, tmp_path):
    f = make_ferry("client-ca")
    alice = f.add_user("alice")
    s = f.serve_tls()
    try:
        u = url("ftp", s.port, "alice", alice.password)
        ok(run_client(home, "ls", "--ca-file", str(f.tls_cert), u))
        assert not (home / ".config" / "ferry" / "known_hosts").exists()
        # a CA file that does not vouch for the server: refused, no TOFU fallback
        other = make_ferry("client-ca-other")
        other.print_fingerprint()
        p = run_client(home, "ls", "--accept-new-cert", "--ca-file", str(other.tls_cert), u)
        line = one_line_error(p, EXIT_CONN)
        assert "TLS handshake" in line, line
    finally:
        s.stop(timeout=15)
