"""FTPS: explicit (AUTH TLS) and implicit (ftps://) TLS with real clients (curl, lftp,
Python ftplib) and raw sessions; the TLS policy (tls.require), data-connection TLS session
reuse, the generated certificate, and hostile or broken TLS clients.

Servers here listen on 127.0.0.1 (and 0.0.0.0 for the non-loopback default policy) and
are started with explicit `--listen`/`--listen-implicit` (TlsServer in ferry_e2e)."""

from __future__ import annotations

import ftplib
import hashlib
import ipaddress
import os
import random
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ferry_e2e import (
    Ctrl, TlsCtrl, curl, curl_replies, dir_growth, dir_sizes, fingerprint_der,
    fingerprint_pem_file, ftp_retr, ftp_size, ftp_stor, lftp_tls, recv_all, rst_close,
    sha256_file, tls_client_context, tls_client_hello, tree_digest, wait_until, write_random,
)

pytestmark = pytest.mark.timeout(120)

REUSE_SETTING = "tls.require_session_reuse"
TLS_VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


def cred(u) -> list[str]:
    return ["-u", f"{u.name}:{u.password}"]


def ctx_for(version: str, cafile=None) -> ssl.SSLContext:
    v = TLS_VERSIONS[version]
    return tls_client_context(cafile, max_version=v, min_version=v)


def xferlog_records(ferry, name: str) -> list[list[str]]:
    """xferlog lines whose file ends with `name`, split in fields (status is the last)."""
    if not ferry.xferlog.exists():
        return []
    return [l.split() for l in ferry.xferlog.read_text().splitlines() if f"/{name} " in l]


def logins(server, user) -> int:
    return sum(1 for l in server.stderr_text().splitlines() if f"logged in user={user.name}" in l)


def no_temp_files(d: Path) -> bool:
    return not [n for n in os.listdir(d) if n.startswith(".ferry-")]


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def tls_srv(make_ferry):
    """Default policy on loopback (TLS offered, not required), session reuse required,
    an explicit (ftp) and an implicit (ftps) listener."""
    f = make_ferry("tls")
    alice = f.add_user("alice")
    s = f.serve_tls("limits.failed_login_delay_ms=50", listen_implicit=("127.0.0.1:0",))
    yield s, alice
    s.stop(timeout=15)


@pytest.fixture(scope="module")
def secure_srv(make_ferry):
    """tls.require=all on loopback: every login and every data connection must be TLS, so
    a client that works against it really used TLS for everything."""
    f = make_ferry("tls-all")
    alice = f.add_user("alice")
    s = f.serve_tls("limits.failed_login_delay_ms=50", "tls.require=all", listen_implicit=("127.0.0.1:0",))
    yield s, f
    s.stop(timeout=15)


@pytest.fixture(scope="module")
def noreuse_srv(make_ferry):
    f = make_ferry("tls-noreuse")
    alice = f.add_user("alice")
    s = f.serve_tls("limits.failed_login_delay_ms=50", f"{REUSE_SETTING}=false")
    yield s, alice
    s.stop(timeout=15)


@pytest.fixture(scope="module")
def stall_srv(make_ferry):
    f = make_ferry("tls-stall")
    alice = f.add_user("alice")
    s = f.serve_tls("limits.failed_login_delay_ms=50", "tls.handshake_timeout_secs=2",
                    listen_implicit=("127.0.0.1:0",))
    yield s, alice
    s.stop(timeout=15)


def assert_healthy(server, user, implicit: bool = False):
    """A complete TLS session still works: login, upload, list, download."""
    c = server.tls_ctrl(user, implicit=implicit)
    try:
        c.expect("TYPE I", 200)
        name = f"health-{random.randrange(10**9)}.bin"
        payload = os.urandom(10_000)
        r = c.tls_stor(name, payload)
        assert r.code == 226, f"upload after the disturbance: {r}"
        assert name.encode() in c.tls_list("NLST").split(b"\r\n")
        assert c.tls_retr(name) == payload
        c.expect("DELE " + name, 250)
        c.expect("QUIT", 221)
    finally:
        c.close()


# --------------------------------------------------------------------------- certificate


def test_startup_prints_certificate_fingerprint_and_listeners(tls_srv):
    s, _ = tls_srv
    cert = s.ferry.tls_cert
    assert s.fingerprint, s.stdout_lines
    assert Path(s.cert_path).resolve() == cert.resolve(), s.stdout_lines
    assert s.fingerprint == fingerprint_pem_file(cert), "printed fingerprint is not the SHA-256 of cert.pem"
    kinds = sorted((k, h) for k, h, _p in s.listeners)
    assert kinds == [("ftp", "127.0.0.1"), ("ftps", "127.0.0.1")], s.stdout_lines


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_presented_certificate_is_the_printed_one(tls_srv, implicit):
    s, _ = tls_srv
    c = s.tls_ctrl(implicit=implicit)
    try:
        der = c.sock.getpeercert(binary_form=True)
        assert fingerprint_der(der) == s.fingerprint
        c.expect("NOOP", 200)
    finally:
        c.close()


def test_generated_certificate_has_localhost_sans(tls_srv):
    s, _ = tls_srv
    info = ssl._ssl._test_decode_cert(str(s.ferry.tls_cert))  # noqa: SLF001 (stdlib PEM decoder)
    sans = info.get("subjectAltName", ())
    dns = {v for k, v in sans if k == "DNS"}
    ips = {ipaddress.ip_address(v.strip()) for k, v in sans if k == "IP Address"}
    assert "localhost" in dns, sans
    assert ipaddress.ip_address("127.0.0.1") in ips, sans
    assert ipaddress.ip_address("::1") in ips, sans


def test_generated_certificate_is_reused_across_restarts(make_ferry):
    f = make_ferry("tls-restart")
    fp0 = f.print_fingerprint()
    assert re.fullmatch(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}", fp0), fp0
    assert f.tls_cert.exists(), "--print-fingerprint did not create the default certificate"
    assert fp0 == fingerprint_pem_file(f.tls_cert)
    pem0 = f.tls_cert.read_bytes()
    key0 = (f.data_dir / "tls" / "key.pem").read_bytes()
    fps = []
    for _ in range(2):
        s = f.serve_tls()
        try:
            fps.append(s.fingerprint)
            c = s.tls_ctrl()
            try:
                assert fingerprint_der(c.sock.getpeercert(binary_form=True)) == fp0
            finally:
                c.close()
        finally:
            assert s.stop(timeout=15) == 0
    assert fps == [fp0, fp0], f"fingerprint changed across restarts: {fp0} then {fps}"
    assert f.tls_cert.read_bytes() == pem0
    assert (f.data_dir / "tls" / "key.pem").read_bytes() == key0
    assert f.print_fingerprint() == fp0


def test_print_fingerprint_matches_the_started_servers_line(make_ferry):
    f = make_ferry("tls-fp")
    s = f.serve_tls()  # the server creates the certificate first this time
    try:
        assert s.fingerprint
        assert f.print_fingerprint() == s.fingerprint
    finally:
        s.stop(timeout=15)


def test_certificate_and_key_from_files_are_served(make_ferry):
    other = make_ferry("tls-certsrc")
    fp = other.print_fingerprint()  # a certificate + key pair in other/tls/
    f = make_ferry("tls-certfile")
    alice = f.add_user("alice")
    cert, key = other.data_dir / "tls" / "cert.pem", other.data_dir / "tls" / "key.pem"
    s = f.serve_tls(f"tls.cert={cert}", f"tls.key={key}", listen_implicit=("127.0.0.1:0",))
    alice.home.mkdir(parents=True, exist_ok=True)
    (alice.home / "here.txt").write_bytes(b"h")
    try:
        assert s.fingerprint == fp, s.stdout_lines
        for implicit in (False, True):
            c = s.tls_ctrl(alice, implicit=implicit)
            try:
                assert fingerprint_der(c.sock.getpeercert(binary_form=True)) == fp
                assert c.tls_retr("here.txt") == b"h"
            finally:
                c.close()
    finally:
        s.stop(timeout=15)


# --------------------------------------------------------------------------- commands


def test_feat_lists_auth_tls_pbsz_prot(tls_srv):
    s, _ = tls_srv
    c = s.ctrl()
    try:
        r = c.expect("FEAT", 211)
        feats = [l.strip().upper() for l in r.lines[1:-1]]
        assert "AUTH TLS" in feats, r
        assert "PBSZ" in feats, r
        assert "PROT" in feats, r
    finally:
        c.close()


@pytest.mark.parametrize("mech", ["TLS", "SSL", "tls"])
def test_auth_tls_and_auth_ssl_upgrade_the_connection(tls_srv, mech):
    s, alice = tls_srv
    c = TlsCtrl(s.host, s.port)
    try:
        assert c.reply().code == 220
        c.auth(mech)
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3"), c.sock.version()
        c.login(alice)
        c.expect("PBSZ 0", 200)
        c.expect("PROT P", 200)
        (alice.home / f"auth-{mech}.txt").write_bytes(b"a")
        assert f"auth-{mech}.txt".encode() in c.tls_list("NLST").split(b"\r\n")
    finally:
        c.close()


def test_auth_with_unknown_mechanism_is_504(tls_srv):
    s, alice = tls_srv
    c = s.ctrl()
    try:
        c.expect("AUTH FOO", 504)
        c.expect("NOOP", 200)  # still a working plaintext session
        c.login(alice)
    finally:
        c.close()


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_auth_when_already_tls_is_503(tls_srv, implicit):
    s, alice = tls_srv
    c = s.tls_ctrl(implicit=implicit)
    try:
        c.expect("AUTH TLS", 503)
        c.expect("AUTH SSL", 503)
        c.login(alice)  # the TLS session goes on
        c.expect("PBSZ 0", 200)
        c.expect("PROT P", 200)
        (alice.home / "again.txt").write_bytes(b"again")
        assert c.tls_retr("again.txt") == b"again"
    finally:
        c.close()


def test_pbsz_and_prot_before_auth_are_503(tls_srv):
    s, alice = tls_srv
    c = s.ctrl(alice)
    try:
        c.expect("PBSZ 0", 503)
        c.expect("PROT P", 503)
        c.expect("PROT C", 503)
    finally:
        c.close()


def test_prot_levels_and_ccc(tls_srv):
    s, alice = tls_srv
    c = s.tls_ctrl(alice, prot=None)
    try:
        c.expect("PBSZ 0", 200)
        c.expect("PROT S", 536)
        c.expect("PROT E", 536)
        c.expect("PROT C", 200)
        # PROT C on a server that does not require TLS for data: the listing is clear text
        r, data = c.listing("NLST")
        assert r.code == 226, r
        c.expect("PROT P", 200)
        assert c.tls_list("NLST") == data
        c.expect("CCC", 534)
        c.expect("NOOP", 200)  # still TLS after the refused CCC
        assert c.tls, "control connection lost TLS"
    finally:
        c.close()


# --------------------------------------------------------------------------- policy


def test_loopback_default_policy_allows_plaintext_login(tls_srv):
    s, alice = tls_srv
    c = s.ctrl(alice)
    try:
        r, _ = c.listing("NLST")
        assert r.code == 226, r
    finally:
        c.close()


def assert_user_refused_before_auth(server, user):
    c = TlsCtrl(server.host, server.port)
    try:
        c.expect_reply(220)
        r = c.cmd(f"USER {user.name}")
        assert r.code == 530, f"USER before AUTH: expected 530, got {r}"
        assert "TLS" in r.text, f"the refusal should say to use TLS: {r}"
        r = c.cmd(f"PASS {user.password}")
        assert r.code == 530, f"PASS before AUTH: expected 530, got {r}"
        c.auth()  # same connection, upgraded: now the login works
        c.login(user)
    finally:
        c.close()


def test_require_login_refuses_user_before_auth_but_allows_clear_data(make_ferry):
    f = make_ferry("tls-login")
    alice = f.add_user("alice")
    s = f.serve_tls("limits.failed_login_delay_ms=50", "tls.require=login")
    try:
        assert_user_refused_before_auth(s, alice)
        c = s.tls_ctrl(alice, prot="C")
        try:
            r, _ = c.listing("NLST")
            assert r.code == 226, f"tls.require=login does not require PROT P: {r}"
        finally:
            c.close()
    finally:
        s.stop(timeout=15)


def assert_prot_p_required(server, user):
    """After AUTH + login: transfers without PROT P are 521, PROT C is 534, PROT P works."""
    (user.home / "p.txt").write_bytes(b"protected")
    c = server.tls_ctrl(user, prot=None)
    try:
        c.expect("TYPE I", 200)
        for cmd in ("LIST", "NLST", "RETR p.txt", "STOR q.txt"):
            r, _ = c.listing(cmd)
            assert r.code == 521, f"{cmd} without PROT P: expected 521, got {r}"
        assert not (user.home / "q.txt").exists()
        c.expect("PBSZ 0", 200)
        r = c.cmd("PROT C")
        assert r.code == 534, f"PROT C under tls.require=all: expected 534, got {r}"
        r, _ = c.listing("LIST")
        assert r.code == 521, f"LIST after a refused PROT C: expected 521, got {r}"
        c.expect("PROT P", 200)
        assert c.tls_retr("p.txt") == b"protected"
        assert c.tls_stor("q.txt", b"q").code == 226
        assert (user.home / "q.txt").read_bytes() == b"q"
    finally:
        c.close()


def test_require_all_refuses_login_and_transfers_without_tls(secure_srv):
    s, f = secure_srv
    alice = f.users["alice"]
    assert_user_refused_before_auth(s, alice)
    assert_prot_p_required(s, alice)


def test_non_loopback_listener_requires_tls_by_default(make_ferry):
    f = make_ferry("tls-any")
    alice = f.add_user("alice")
    s = f.serve_tls("limits.failed_login_delay_ms=50", listen=("0.0.0.0:0",))
    try:
        assert s.listeners[0][1] == "0.0.0.0", s.stdout_lines
        assert_user_refused_before_auth(s, alice)
        assert_prot_p_required(s, alice)
    finally:
        s.stop(timeout=15)


# --------------------------------------------------------------------------- session reuse (raw)


@pytest.mark.parametrize("version", list(TLS_VERSIONS))
def test_data_connections_resuming_the_control_session_are_accepted(tls_srv, version):
    s, alice = tls_srv
    c = s.tls_ctrl(alice, context=ctx_for(version))
    try:
        assert c.sock.version() == {"tls1.2": "TLSv1.2", "tls1.3": "TLSv1.3"}[version]
        c.expect("TYPE I", 200)
        name = f"reuse-{version}.bin"
        payload = os.urandom(300_001)
        for _ in range(5):  # several data connections on one control connection
            data = c.tls_transfer_start(f"STOR {name}")
            assert data.session_reused, "the client did not resume (test setup)"
            data.sendall(payload)
            data.unwrap()
            data.close()
            c.expect_reply(226)
            assert c.tls_retr(name) == payload
        assert (alice.home / name).read_bytes() == payload
    finally:
        c.close()


@pytest.mark.parametrize("version", list(TLS_VERSIONS))
@pytest.mark.parametrize("cmd", ["NLST", "RETR nr.txt"])
def test_data_connection_without_session_reuse_is_refused_with_522(tls_srv, version, cmd):
    s, alice = tls_srv
    (alice.home / "nr.txt").write_bytes(b"secret")
    c = s.tls_ctrl(alice, context=ctx_for(version))
    try:
        raw = c.pasv()
        c.expect(cmd, 150, 125)
        got = b""
        try:
            data = ctx_for(version).wrap_socket(raw, server_hostname=c.server_hostname)  # fresh context
            assert not data.session_reused
            got = recv_all(data, timeout=15)
        except (ssl.SSLError, OSError):
            pass
        finally:
            raw.close()
        assert got == b"", f"data sent over a data connection that did not resume: {got!r}"
        r = c.reply()
        assert r.code == 522, f"expected 522 for a data connection without session reuse, got {r}"
        assert REUSE_SETTING in r.text, f"the refusal should name {REUSE_SETTING}: {r}"
        # the control connection goes on; a resuming data connection works
        c.expect("NOOP", 200)
        assert c.tls_retr("nr.txt") == b"secret"
    finally:
        c.close()


def test_data_connection_resuming_another_control_connections_session_is_refused(tls_srv):
    s, alice = tls_srv
    (alice.home / "steal.txt").write_bytes(b"not yours")
    ctx = tls_client_context()
    a = s.tls_ctrl(alice, context=ctx)
    b = s.tls_ctrl(alice, context=ctx)
    try:
        assert a.tls_retr("steal.txt") == b"not yours"  # a's session is resumable
        raw = b.pasv()
        b.expect("RETR steal.txt", 150, 125)
        got = b""
        try:
            data = ctx.wrap_socket(raw, server_hostname=b.server_hostname, session=a.session)
            got = recv_all(data, timeout=15)
        except (ssl.SSLError, OSError):
            pass
        finally:
            raw.close()
        assert got == b"", "a data connection resumed another control connection's session"
        r = b.reply()
        assert r.code == 522, f"expected 522, got {r}"
        b.expect("NOOP", 200)
    finally:
        a.close()
        b.close()


def upload_like_curl(c, command: str, payload: bytes) -> None:
    """An upload the way curl does it: resume the session, send the data and close_notify,
    close the socket, never read the data connection after the handshake. (TLS over memory
    BIOs, so not one byte more than the handshake needs is read from the socket.)"""
    raw = c.pasv()
    try:
        c.expect(command, 150, 125)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = c.context.wrap_bio(incoming, outgoing, server_hostname=c.server_hostname, session=c.session)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                d = raw.recv(65536)
                assert d, "data connection closed during the handshake"
                incoming.write(d)
        raw.sendall(outgoing.read())
        assert obj.session_reused, "the client did not resume (test setup)"
        for i in range(0, len(payload), 1 << 16):
            obj.write(payload[i:i + (1 << 16)])
            raw.sendall(outgoing.read())
        try:
            obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        raw.sendall(outgoing.read())  # close_notify
    finally:
        raw.close()


@pytest.mark.parametrize("version", list(TLS_VERSIONS))
def test_upload_by_a_client_that_never_reads_the_data_connection_completes(tls_srv, version, uniq):
    """curl uploads this way. If the server sends anything on the data connection after
    the handshake (e.g. TLS 1.3 session tickets), the client's kernel answers the close with
    a TCP RST, and the server loses the end of the upload."""
    s, alice = tls_srv
    payload = os.urandom(4_000_000)
    c = s.tls_ctrl(alice, context=ctx_for(version), timeout=30)
    try:
        c.expect("TYPE I", 200)
        upload_like_curl(c, f"STOR {uniq}.bin", payload)
        r = c.reply()
        assert r.code == 226, f"upload with close_notify by a client that never reads: {r}"
        assert (alice.home / f"{uniq}.bin").read_bytes() == payload
    finally:
        c.close()


def test_curl_tls13_uploads_succeed_every_time(secure_srv, cwd_secure, uniq, tmp_path):
    s, f = secure_srv
    alice = f.users["alice"]
    src = tmp_path / "src"
    digest = write_random(src, 1_000_003)
    failures = []
    for i in range(20):
        p = curl(*cred(alice), "--ssl-reqd", "-k", "--tlsv1.3", "-T", str(src), s.url(f"{uniq}/u{i}.bin"),
                 check=False)
        if p.returncode != 0:
            failures.append((i, p.returncode, p.stderr.decode("utf-8", "replace").strip()))
    assert not failures, f"{len(failures)}/20 curl uploads failed: {failures[:3]}"
    for i in range(20):
        assert sha256_file(cwd_secure / f"u{i}.bin") == digest


def test_download_data_connection_ends_with_close_notify(tls_srv):
    s, alice = tls_srv
    payload = os.urandom(2_000_000)
    (alice.home / "cn.bin").write_bytes(payload)
    c = s.tls_ctrl(alice)
    try:
        c.expect("TYPE I", 200)
        data = c.tls_transfer_start("RETR cn.bin", suppress_ragged_eofs=False)
        try:
            got = recv_all(data)  # raises SSLEOFError if the server closes without close_notify
        except ssl.SSLEOFError as e:
            raise AssertionError(f"download data connection closed without close_notify: {e}")
        assert got == payload
        c.expect_reply(226)
    finally:
        c.close()


# --------------------------------------------------------------------------- ftplib FTP_TLS


def test_ftplib_ftp_tls_round_trip_when_reuse_not_required(noreuse_srv, tmp_path):
    s, alice = noreuse_srv
    ftp = s.ftp_tls(alice)
    try:
        payload = os.urandom(1_234_567)
        ftp.voidcmd("TYPE I")
        ftp_stor(ftp, "ftplib.bin", payload)
        assert (alice.home / "ftplib.bin").read_bytes() == payload
        assert "ftplib.bin" in ftp.nlst()
        lines = []
        ftp.retrlines("LIST", lines.append)
        assert any(l.endswith(" ftplib.bin") and " 1234567 " in l for l in lines), lines
        assert ftp_size(ftp, "ftplib.bin") == len(payload)
        assert ftp_retr(ftp, "ftplib.bin") == payload
        assert ftp_retr(ftp, "ftplib.bin", rest=1_000_000) == payload[1_000_000:]
        ftp.quit()
    finally:
        ftp.close()


def ftplib_transfer_reply(ftp: ftplib.FTP_TLS, cmd: str) -> str:
    """Run a transfer command with ftplib's own TLS data connection; return the final reply
    text (whatever it is) instead of raising."""
    try:
        conn = ftp.transfercmd(cmd)
    except ftplib.error_perm as e:
        return str(e)
    except (ssl.SSLError, OSError):
        conn = None
    if conn is not None:
        try:
            recv_all(conn, timeout=15)
        except (ssl.SSLError, OSError):
            pass
    try:
        return ftp.voidresp()
    except ftplib.all_errors as e:
        return str(e)


@pytest.mark.parametrize("cmd", ["LIST", "RETR ft.txt"])
def test_ftplib_ftp_tls_gets_522_naming_the_setting_on_default_server(tls_srv, cmd):
    s, alice = tls_srv
    (alice.home / "ft.txt").write_bytes(b"x")
    ftp = s.ftp_tls(alice)
    try:
        r = ftplib_transfer_reply(ftp, cmd)
        assert r.startswith("522"), f"ftplib FTP_TLS {cmd}: expected 522, got {r!r}"
        assert REUSE_SETTING in r, f"the 522 should name {REUSE_SETTING}: {r!r}"
        assert ftp.voidcmd("NOOP").startswith("200")
    finally:
        ftp.close()


# --------------------------------------------------------------------------- curl


CURL_MODES = ["explicit-k", "explicit-cacert", "implicit-k", "implicit-cacert"]


def curl_tls(s, mode: str, path: str) -> tuple[list[str], str]:
    """(curl TLS options, URL) for a mode: explicit (`ftp://` + --ssl-reqd) or implicit
    (`ftps://`), certificate not verified (-k) or verified (--cacert cert.pem)."""
    kind, verify = mode.split("-")
    opts = ["-k"] if verify == "k" else ["--cacert", str(s.ferry.tls_cert)]
    if kind == "explicit":
        return ["--ssl-reqd", *opts], s.url(path)
    return opts, s.ftps_url(path)


@pytest.fixture
def cwd_secure(secure_srv, uniq):
    s, f = secure_srv
    d = f.users["alice"].home / uniq
    d.mkdir()
    return d


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curl_list_upload_download(secure_srv, cwd_secure, uniq, tmp_path, mode):
    s, f = secure_srv
    alice = f.users["alice"]
    src = tmp_path / "src"
    digest = write_random(src, 1_000_003)
    opts, url = curl_tls(s, mode, f"{uniq}/up load.bin")
    curl(*cred(alice), *opts, "-T", str(src), url)
    assert sha256_file(cwd_secure / "up load.bin") == digest
    (cwd_secure / "sub").mkdir()
    opts, dir_url = curl_tls(s, mode, f"{uniq}/")
    p = curl(*cred(alice), *opts, dir_url)
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 2, lines
    assert any(l.startswith("-") and l.endswith(" up load.bin") and " 1000003 " in l for l in lines), lines
    assert any(l.startswith("d") and l.endswith(" sub") for l in lines), lines
    p = curl(*cred(alice), *opts, "-l", dir_url)
    assert sorted(p.stdout.decode().splitlines()) == ["sub", "up load.bin"]
    out = tmp_path / "out"
    p = curl(*cred(alice), *opts, "-o", str(out), "-w", "%{size_download}", url)
    assert int(p.stdout) == 1_000_003
    assert sha256_file(out) == digest


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curl_resumes_download(secure_srv, cwd_secure, uniq, tmp_path, mode):
    s, f = secure_srv
    alice = f.users["alice"]
    full = os.urandom(3_000_000)
    (cwd_secure / "dl.bin").write_bytes(full)
    out = tmp_path / "dl.bin"
    # a local partial with other content: a real resume (REST n + RETR) keeps our prefix
    partial = b"L" * 1_111_111
    out.write_bytes(partial)
    opts, url = curl_tls(s, mode, f"{uniq}/dl.bin")
    p = curl(*cred(alice), *opts, "-v", "-C", "-", "-o", str(out), url)
    assert out.read_bytes() == partial + full[len(partial):]
    assert any(r.startswith("350") for r in curl_replies(p.stderr)), curl_replies(p.stderr)


@pytest.mark.parametrize("mode", CURL_MODES)
def test_curl_resumes_upload(secure_srv, cwd_secure, uniq, tmp_path, mode):
    s, f = secure_srv
    alice = f.users["alice"]
    src = tmp_path / "src"
    write_random(src, 3_000_000)
    full = src.read_bytes()
    remote = cwd_secure / "ul.bin"
    partial = b"R" * 1_234_567  # a remote partial with other content: kept if curl really resumes
    remote.write_bytes(partial)
    opts, url = curl_tls(s, mode, f"{uniq}/ul.bin")
    curl(*cred(alice), *opts, "-C", "-", "-T", str(src), url)
    assert remote.read_bytes() == partial + full[len(partial):]


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_curl_without_ca_or_k_rejects_the_self_signed_certificate(secure_srv, kind):
    s, f = secure_srv
    alice = f.users["alice"]
    if kind == "explicit":
        args = ["--ssl-reqd", s.url("")]
    else:
        args = [s.ftps_url("")]
    p = curl(*cred(alice), *args, check=False)
    assert p.returncode == 60, (p.returncode, p.stderr)  # CURLE_PEER_FAILED_VERIFICATION


def test_curl_cacert_verifies_the_localhost_name(secure_srv, cwd_secure, uniq):
    s, f = secure_srv
    alice = f.users["alice"]
    (cwd_secure / "n.txt").write_bytes(b"by name")
    p = curl(*cred(alice), "--ssl-reqd", "--cacert", str(f.tls_cert),
             "--resolve", f"localhost:{s.port}:127.0.0.1",
             f"ftp://localhost:{s.port}/{uniq}/n.txt")
    assert p.stdout == b"by name"


def test_curl_cacert_rejects_a_name_not_in_the_certificate(secure_srv):
    s, f = secure_srv
    alice = f.users["alice"]
    p = curl(*cred(alice), "--ssl-reqd", "--cacert", str(f.tls_cert),
             "--resolve", f"not-this-host.example:{s.port}:127.0.0.1",
             f"ftp://not-this-host.example:{s.port}/", check=False)
    assert p.returncode == 60, (p.returncode, p.stderr)


def test_curl_reuses_sessions_on_data_connections(secure_srv, cwd_secure, uniq):
    s, f = secure_srv
    alice = f.users["alice"]
    (cwd_secure / "a.txt").write_bytes(b"a")
    opts, url = curl_tls(s, "explicit-k", f"{uniq}/")
    p = curl(*cred(alice), *opts, "-v", "-l", url)
    err = p.stderr.decode("utf-8", "replace")
    assert "PROT P" in err and "SSL re-using session ID" in err, err[-3000:]
    assert p.stdout.decode().splitlines() == ["a.txt"]


# --------------------------------------------------------------------------- lftp


class SniffingProxy:
    """A TCP relay in front of the control port that counts connections and keeps the
    first bytes the server sent on each, to read the TLS version from the ServerHello
    that follows `234`. (Data connections go straight to the server's passive ports.)"""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.server_bytes: list[bytearray] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                client, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            for sck in (client, upstream):
                sck.settimeout(1.0)
            seen = bytearray()
            self.server_bytes.append(seen)
            for a, b, rec in ((client, upstream, None), (upstream, client, seen)):
                t = threading.Thread(target=self._pump, args=(a, b, rec), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst, record):
        try:
            while not self.stop.is_set():
                try:
                    d = src.recv(65536)
                except socket.timeout:
                    continue
                if not d:
                    break
                if record is not None and len(record) < 65536:
                    record += d
                dst.sendall(d)
        except OSError:
            pass
        finally:
            for sck in (src, dst):
                try:
                    sck.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.lsock.close()
        for t in self.threads:
            t.join(5)

    def tls_versions(self) -> list[str]:
        return [server_hello_version(b) for b in self.server_bytes]


def server_hello_version(stream: bytes) -> str:
    """The TLS version a server chose, from its control-connection bytes (plaintext replies,
    `234 ...`, then the ServerHello record)."""
    m = re.search(rb"(?:^|\n)234 [^\n]*\n", bytes(stream))
    assert m, f"no 234 reply in {bytes(stream[:300])!r}"
    rec = stream[m.end():]
    assert rec[:1] == b"\x16" and rec[5:6] == b"\x02", f"not a ServerHello: {bytes(rec[:16])!r}"
    body = rec[9:]
    version = body[0:2]
    i = 2 + 32
    i += 1 + body[i]  # session id
    i += 2 + 1  # cipher suite, compression
    ext_end = i + 2 + int.from_bytes(body[i:i + 2], "big")
    i += 2
    while i < ext_end:
        etype, elen = int.from_bytes(body[i:i + 2], "big"), int.from_bytes(body[i + 2:i + 4], "big")
        if etype == 0x002B:  # supported_versions: the selected version
            version = body[i + 4:i + 6]
        i += 4 + elen
    return {b"\x03\x03": "tls1.2", b"\x03\x04": "tls1.3"}.get(bytes(version), bytes(version).hex())


def make_200_files(root: Path) -> None:
    rng = random.Random(200)
    dirs = [root, root / "a", root / "a" / "b", root / "c", root / "naïve ✓"]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(200):
        d = dirs[i % len(dirs)]
        size = rng.choice([0, 1, 17, 512, 4096, 20_000])
        (d / f"f{i:03d}.bin").write_bytes(rng.randbytes(size))


@pytest.mark.timeout(420)
@pytest.mark.parametrize("version", ["tls1.3", "tls1.2"])
def test_lftp_mirrors_200_files_up_and_down_on_one_connection(secure_srv, tmp_path, version, uniq):
    s, f = secure_srv
    user = f.add_user(f"lftp{version.replace('.', '')}")
    local = tmp_path / "tree"
    make_200_files(local)
    expected = tree_digest(local)
    assert sum(1 for v in expected.values() if v != "dir") == 200
    down = tmp_path / "down"
    priority = None if version == "tls1.3" else "NORMAL:-VERS-TLS1.3"
    before = logins(s, user)
    proxy = SniffingProxy(s.port)
    try:
        via = SimpleNamespace(host=s.host, port=proxy.port)
        p = lftp_tls(via, user,
                     f'set net:connection-limit 1; mirror -R --no-perms "{local}" "/{uniq}"; '
                     f'mirror --no-perms "/{uniq}" "{down}"',
                     priority=priority, timeout=360)
    finally:
        proxy.close()
    assert tree_digest(user.home / uniq) == expected, p.stderr.decode("utf-8", "replace")[-2000:]
    assert tree_digest(down) == expected
    assert proxy.tls_versions() == [version], \
        f"lftp opened {len(proxy.server_bytes)} control connection(s) with {proxy.tls_versions()}"
    time.sleep(0.3)
    assert logins(s, user) - before == 1, "lftp needed more than one login (connection) for the mirrors"


# --------------------------------------------------------------------------- hostile / broken clients


@pytest.mark.parametrize("mech", ["TLS", "SSL"])
def test_plaintext_pipelined_after_auth_closes_the_connection(tls_srv, mech):
    s, alice = tls_srv
    c = s.ctrl()
    try:
        c.sendraw(f"AUTH {mech}\r\nUSER {alice.name}\r\n".encode())
        r = c.reply()
        assert r.code == 234, f"expected 234 to AUTH {mech}, got {r}"
        after = c.buf
        assert c.reads_eof(10), "the server kept the connection open after plaintext pipelined after AUTH"
        after += c.buf
        assert not after or after[:1] not in (b"\x15", b"\x16"), \
            f"the server started a TLS handshake/alert instead of closing: {after[:32]!r}"
        assert not re.search(rb"^331", after, re.M), f"the pipelined USER was answered: {after!r}"
    finally:
        c.close()
    assert_healthy(s, alice)


def test_implicit_port_sends_nothing_in_plaintext(tls_srv):
    s, _ = tls_srv
    sock = socket.create_connection((s.host, s.ftps_port), timeout=10)
    try:
        sock.settimeout(1.5)
        try:
            got = sock.recv(100)
        except socket.timeout:
            got = None
        assert got is None, f"implicit TLS port sent plaintext before the handshake: {got!r}"
    finally:
        sock.close()


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "ftp-command": b"USER alice\r\n",
    "random": bytes(random.Random(7).randbytes(4096)),
    "bad-record": b"\x16\x03\x01\x00\x05\x00\x00\x00\x00\x00" + b"\x16\x03\x01\xff\xff" + b"\x00" * 64,
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_garbage_handshake_is_closed_and_server_stays_healthy(tls_srv, garbage, implicit):
    s, alice = tls_srv
    if implicit:
        c = Ctrl(s.host, s.ftps_port)  # raw TCP to the implicit port
    else:
        c = s.ctrl()
        c.expect("AUTH TLS", 234)
    try:
        t0 = time.monotonic()
        try:
            c.sendraw(GARBAGE[garbage])
        except OSError:
            pass  # already closed by the server
        assert c.reads_eof(10), f"server kept a connection open after a garbage handshake ({garbage})"
        assert time.monotonic() - t0 < 10
    finally:
        c.close()
    assert_healthy(s, alice, implicit=implicit)
    assert_healthy(s, alice, implicit=not implicit)
    assert s.running()


STALLS = ["implicit-silent", "implicit-half-hello", "explicit-silent", "explicit-half-hello"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stall", STALLS)
def test_stalled_handshake_is_closed_after_the_timeout(stall_srv, stall):
    s, alice = stall_srv
    implicit = stall.startswith("implicit")
    sock = socket.create_connection((s.host, s.ftps_port if implicit else s.port), timeout=20)
    try:
        if not implicit:
            buf = b""
            while b"\r\n" not in buf:
                buf += sock.recv(1000)
            assert buf.startswith(b"220"), buf
            sock.sendall(b"AUTH TLS\r\n")
            buf = b""
            while b"\r\n" not in buf:
                buf += sock.recv(1000)
            assert buf.startswith(b"234"), buf
        if stall.endswith("half-hello"):
            hello = tls_client_hello()
            sock.sendall(hello[: len(hello) // 2])
        t0 = time.monotonic()
        # while this handshake stalls, the server serves others
        assert_healthy(s, alice, implicit=implicit)
        sock.settimeout(max(0.1, 15 - (time.monotonic() - t0)))
        closed = False
        try:
            while True:
                d = sock.recv(65536)
                if not d:
                    closed = True
                    break
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        elapsed = time.monotonic() - t0
        assert closed, f"stalled handshake ({stall}) not closed after {elapsed:.1f}s (timeout is 2s)"
        assert 1.0 <= elapsed <= 8, f"stalled handshake closed after {elapsed:.1f}s; timeout is 2s"
    finally:
        sock.close()
    assert_healthy(s, alice, implicit=implicit)


@pytest.mark.parametrize("what", ["data", "data+control"])
def test_client_reset_mid_download_leaves_server_healthy(tls_srv, what):
    s, alice = tls_srv
    write_random(alice.home / "big-rst.bin", 32 << 20)
    c = s.tls_ctrl(alice, timeout=30)
    try:
        c.expect("TYPE I", 200)
        data = c.tls_transfer_start("RETR big-rst.bin")
        got = 0
        while got < (1 << 20):
            d = data.recv(65536)
            assert d, "download ended early"
            got += len(d)
        rst_close(data)
        if what == "data+control":
            rst_close(c.sock)
        else:
            r = c.reply()
            assert 400 <= r.code < 600, f"a download reset by the client must not end with {r}"
            c.expect("NOOP", 200)
    finally:
        c.close()
    assert_healthy(s, alice)


def fin_without_close_notify(data: ssl.SSLSocket) -> None:
    """End an upload with a TCP FIN under the TLS layer (no close_notify), then read the raw
    socket to EOF so that closing it sends no RST."""
    data.shutdown(socket.SHUT_WR)  # drops the TLS layer: no close_notify, then FIN
    data.settimeout(15)
    try:
        while data.recv(65536):  # plain recv now (the TLS object is gone)
            pass
    except OSError:
        pass
    data.close()


@pytest.mark.parametrize("end", ["fin", "rst"])
def test_upload_without_close_notify_is_a_failed_upload_keeping_the_partial(tls_srv, end, uniq):
    s, alice = tls_srv
    d = alice.home / uniq
    d.mkdir()
    payload = os.urandom(1_500_000)
    c = s.tls_ctrl(alice, timeout=30)
    try:
        c.expect("TYPE I", 200)
        baseline = dir_sizes(d)
        data = c.tls_transfer_start(f"STOR {uniq}/new.bin")
        data.sendall(payload)
        wait_until(lambda: dir_growth(d, baseline) >= 1_000_000, 15, what="1 MB of the upload on disk")
        if end == "fin":
            fin_without_close_notify(data)
        else:
            rst_close(data)
        r = c.reply()
        assert r.code not in (226, 250), f"upload truncated without close_notify reported complete: {r}"
        assert 400 <= r.code < 600, r
        r = c.cmd(f"SIZE {uniq}/new.bin")
        assert r.code == 213, f"the failed upload's partial must be kept under its name: {r}"
        n = int(r.text[4:])
        if end == "fin":
            assert n == len(payload), f"every byte before the FIN arrived; partial has {n}"
        else:
            assert 1_000_000 <= n <= len(payload), n
        assert (d / "new.bin").read_bytes() == payload[:n]
        recs = wait_until(lambda: xferlog_records(s.ferry, f"{uniq}/new.bin"), 10, 0.2, "xferlog line")
        assert [rec[-1] for rec in recs] == ["i"], f"xferlog must record an incomplete transfer: {recs}"
        # and it resumes to a complete file
        c.expect(f"REST {n}", 350)
        if n < len(payload):
            r = c.tls_stor(f"{uniq}/new.bin", payload[n:])
            assert r.code == 226, r
        assert (d / "new.bin").read_bytes() == payload
    finally:
        c.close()


@pytest.mark.parametrize("end", ["fin", "rst"])
def test_overwrite_without_close_notify_leaves_the_old_file(tls_srv, end, uniq):
    s, alice = tls_srv
    d = alice.home / uniq
    d.mkdir()
    old = os.urandom(700_000)
    (d / "old.bin").write_bytes(old)
    c = s.tls_ctrl(alice, timeout=30)
    try:
        c.expect("TYPE I", 200)
        baseline = dir_sizes(d)
        data = c.tls_transfer_start(f"STOR {uniq}/old.bin")
        data.sendall(os.urandom(1_500_000))
        wait_until(lambda: dir_growth(d, baseline) >= 1_000_000, 15, what="1 MB of the upload on disk")
        if end == "fin":
            fin_without_close_notify(data)
        else:
            rst_close(data)
        r = c.reply()
        assert 400 <= r.code < 600, f"overwrite truncated without close_notify: {r}"
        assert c.cmd(f"SIZE {uniq}/old.bin").text == f"213 {len(old)}"
        wait_until(lambda: no_temp_files(d), 10, what="the failed overwrite's temp file to be discarded")
        assert (d / "old.bin").read_bytes() == old
        assert sorted(os.listdir(d)) == ["old.bin"]
        r = c.cmd(f"HASH {uniq}/old.bin")
        assert r.code == 213 and hashlib.sha256(old).hexdigest() in r.text, f"HASH after a failed overwrite: {r}"
    finally:
        c.close()


def test_upload_with_close_notify_is_complete(tls_srv, uniq):
    """The counterpart of the truncation tests: a clean TLS end is a complete upload."""
    s, alice = tls_srv
    payload = os.urandom(1_500_000)
    c = s.tls_ctrl(alice)
    try:
        c.expect("TYPE I", 200)
        r = c.tls_stor(f"{uniq}.bin", payload)
        assert r.code == 226, r
        assert (alice.home / f"{uniq}.bin").read_bytes() == payload
        recs = wait_until(lambda: xferlog_records(s.ferry, f"{uniq}.bin"), 10, 0.2, "xferlog line")
        assert [rec[-1] for rec in recs] == ["c"], recs
    finally:
        c.close()
