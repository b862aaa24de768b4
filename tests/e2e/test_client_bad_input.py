"""The `ferry` client's answers to bad input: one line on stderr, the documented exit code, no
panic, and no local file left behind unannounced."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from client_e2e import (EXIT_AUTH, EXIT_CONN, EXIT_REFUSED, EXIT_USAGE, ok, one_line_error,
                        run_client, url)


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unknown_command_is_a_usage_error(home):
    line = one_line_error(run_client(home, "frobnicate", "ftp://127.0.0.1/"), EXIT_USAGE)
    assert "frobnicate" in line


@pytest.mark.parametrize("args", [("get",), ("put",), ("put", "only-a-file"), ("ls",), ("rm",),
                                  ("mkdir",), ("rmdir",), ("mv",), ("mv", "ftp://h/x"), ("hash",),
                                  ("quota",)])
def test_missing_argument_is_a_usage_error(home, args):
    line = one_line_error(run_client(home, *args), EXIT_USAGE)
    assert "needs" in line or "required" in line or "URL" in line, line


@pytest.mark.parametrize("bad", ["http://127.0.0.1/x", "ftp://127.0.0.1:0/", "ftp://127.0.0.1:99999/",
                                 "ftp:///x", "ftp://h/%zz"])
def test_malformed_urls_are_usage_errors(home, bad):
    one_line_error(run_client(home, "ls", bad), EXIT_USAGE)


def test_unreachable_host_is_a_connection_error(home, tmp_path):
    port = closed_port()
    dest = tmp_path / "never.txt"
    line = one_line_error(run_client(home, "get", f"ftp://alice:pw@127.0.0.1:{port}/x.txt", str(dest)),
                          EXIT_CONN)
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower(), line
    assert not dest.exists()


def test_wrong_password_is_an_authentication_error(srv, home):
    p = run_client(home, "ls", "--ca-file", str(srv.ferry.tls_cert),
                   url("ftp", srv.server.port, "alice", "not-the-password"))
    line = one_line_error(p, EXIT_AUTH)
    assert "alice" in line and "530" in line, line


def test_no_password_without_a_terminal_is_an_authentication_error(srv, home):
    p = run_client(home, "ls", "--ca-file", str(srv.ferry.tls_cert),
                   url("ftp", srv.server.port, "alice"))
    line = one_line_error(p, EXIT_AUTH)
    assert "FERRY_PASSWORD" in line and ".netrc" in line, line


def test_remote_file_missing_is_refused_and_leaves_no_file(srv, home, tmp_path):
    dest = tmp_path / "missing.txt"
    p = run_client(home, "get", "--ca-file", str(srv.ferry.tls_cert),
                   url("ftp", srv.server.port, "alice", srv.alice.password, "no/such/file.txt"), str(dest))
    line = one_line_error(p, EXIT_REFUSED)
    assert "550" in line and "no/such/file.txt" in line, line
    assert not dest.exists()
    p = run_client(home, "rm", "--ca-file", str(srv.ferry.tls_cert),
                   url("ftp", srv.server.port, "alice", srv.alice.password, "no-such-file.txt"))
    assert "550" in one_line_error(p, EXIT_REFUSED)


def test_directory_without_r_is_a_usage_error(srv, home, tmp_path, uniq):
    (srv.alice.home / uniq).mkdir()
    p = run_client(home, "get", "--ca-file", str(srv.ferry.tls_cert),
                   url("ftp", srv.server.port, "alice", srv.alice.password, uniq), str(tmp_path))
    assert "-r" in one_line_error(p, EXIT_USAGE)
    p = run_client(home, "put", "--ca-file", str(srv.ferry.tls_cert), str(tmp_path),
                   url("ftp", srv.server.port, "alice", srv.alice.password, uniq + "/"))
    assert "-r" in one_line_error(p, EXIT_USAGE)


def test_implicit_tls_to_a_plain_port_says_what_to_use(srv, home):
    p = run_client(home, "ls", "--ca-file", str(srv.ferry.tls_cert),
                   url("ftps", srv.server.port, "alice", srv.alice.password))
    line = one_line_error(p, EXIT_CONN)
    assert "ftpes://" in line, line


def test_help_documents_the_exit_codes(home):
    p = ok(run_client(home, "get", "--help"))
    assert "Exit codes: 0 success" in p.stdout and "6 verification failed" in p.stdout
