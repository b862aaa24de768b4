"""Helpers for the end-to-end tests of the `ferry` client commands (test_client*.py): run the
client with a private HOME (known_hosts, .netrc), build URLs, and start pyftpdlib.

Every run has a timeout; pyftpdlib listens on 127.0.0.1:0 with a passive range of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ferry_e2e import FERRY_BIN, HOST, _die_with_parent, passive_range

# Exit codes documented in `ferry get --help` and the README.
EXIT_OK, EXIT_LOCAL, EXIT_USAGE, EXIT_CONN, EXIT_AUTH, EXIT_REFUSED, EXIT_VERIFY = 0, 1, 2, 3, 4, 5, 6


def client_env(home: Path, extra: dict | None = None) -> dict:
    """The environment of a client run: HOME is `home`; nothing leaks in from the caller's
    credentials or config."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FERRY_PASSWORD", "XDG_CONFIG_HOME", "NETRC")}
    env.update(HOME=str(home), LC_ALL="C.UTF-8", LANG="C.UTF-8")
    if extra:
        env.update(extra)
    return env


def run_client(home: Path, *args: str, env: dict | None = None, timeout: float = 120,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`ferry ARGS…` without a terminal (stdin closed); returns the completed process."""
    return subprocess.run([FERRY_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=client_env(home, env), cwd=cwd)


def popen_client(home: Path, *args: str, env: dict | None = None,
                 cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([FERRY_BIN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=client_env(home, env), cwd=cwd,
                            preexec_fn=_die_with_parent)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"{p.args} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def one_line_error(p: subprocess.CompletedProcess, code: int) -> str:
    """Asserts exit `code` and a single `ferry: …` line on stderr; returns it."""
    assert p.returncode == code, f"expected exit {code}, got {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("ferry: "), lines[0]
    assert "panicked" not in p.stderr and "RUST_BACKTRACE" not in p.stderr, p.stderr
    return lines[0]


def url(scheme: str, port: int, user: str | None = None, password: str | None = None,
        path: str = "", host: str = HOST) -> str:
    auth = ""
    if user is not None:
        auth = urllib.parse.quote(user, safe="")
        if password is not None:
            auth += ":" + urllib.parse.quote(password, safe="")
        auth += "@"
    return f"{scheme}://{auth}{host}:{port}/" + urllib.parse.quote(path.lstrip("/"))


# --------------------------------------------------------------------------- pyftpdlib

PYFTPD_SCRIPT = textwrap.dedent("""
    import sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
    from pyftpdlib.servers import FTPServer

    home, user, password, lo, hi, rate = sys.argv[1:7]
    auth = DummyAuthorizer()
    auth.add_user(user, password, home, perm="elradfmwMT")

    class Handler(FTPHandler):
        pass

    Handler.authorizer = auth
    Handler.passive_ports = range(int(lo), int(hi) + 1)
    Handler.permit_foreign_addresses = False
    if int(rate) > 0:
        class Throttled(ThrottledDTPHandler):
            read_limit = int(rate)
            write_limit = int(rate)
        Handler.dtp_handler = Throttled
    server = FTPServer(("127.0.0.1", 0), Handler)
    print(server.address[1], flush=True)
    server.serve_forever(timeout=0.5)
""")


def pyftpdlib_available() -> bool:
    try:
        import pyftpdlib  # noqa: F401
        return True
    except ImportError:
        return False


@dataclass
class PyFtpd:
    proc: subprocess.Popen
    port: int
    home: Path
    user: str
    password: str
    log: Path

    def url(self, path: str = "", scheme: str = "ftp", password: bool = True) -> str:
        return url(scheme, self.port, self.user, self.password if password else None, path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_pyftpd(home: Path, log: Path, user: str = "bob", password: str = "pw-bob",
                 rate: int = 0) -> PyFtpd:
    """pyftpdlib serving `home` for `user`, throttled to `rate` bytes/s per transfer if > 0."""
    home.mkdir(parents=True, exist_ok=True)
    lo, hi = passive_range()
    logf = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-c", PYFTPD_SCRIPT, str(home), user, password,
                             str(lo), str(hi), str(rate)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                            preexec_fn=_die_with_parent)
    port: list[int] = []

    def read():
        line = proc.stdout.readline()
        if line.strip().isdigit():
            port.append(int(line))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(20)
    if not port:
        proc.kill()
        raise AssertionError(f"pyftpdlib did not start: {log.read_text(errors='replace')[-2000:]}")
    return PyFtpd(proc, port[0], home, user, password, log)


def wait_size(path: Path, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = path.stat().st_size
            if n >= at_least:
                return n
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {at_least} bytes within {timeout}s")
