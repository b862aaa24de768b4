"""Helpers for the end-to-end tests of the `ferry` client commands (test_client*.py): run the
client with a private HOME (known_hosts, .netrc), build URLs, and start pyftpdlib.

Every run has a timeout; pyftpdlib listens on 127.0.0.1:0 with a passive range of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ferry_e2e import FERRY_BIN, HOST, _die_with_parent, passive_range, wait_until

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


# --------------------------------------------------------------------------- shell and chat

# rustyline and indicatif draw with CSI sequences; `plain` removes them (and CRs) to compare text.
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]")
# The shell's prompt: `ferry alice@127.0.0.1 /dir> ` when connected, `ferry> ` when not.
PROMPT_RE = r"ferry(?: [^\r\n>]*)?> "


def plain(text: str) -> str:
    return ANSI_RE.sub("", text).replace("\r", "")


class _Collect:
    """A pexpect `logfile_read` that keeps everything the terminal showed."""

    def __init__(self):
        self.parts: list[str] = []

    def write(self, s):
        self.parts.append(s)

    def flush(self):
        pass


class ShellPty:
    """`ferry shell ARGS…` on a real pseudo-terminal (pexpect), with a private HOME; every wait
    has a timeout."""

    def __init__(self, home: Path, *args: str, env: dict | None = None, cwd: Path | None = None,
                 timeout: float = 30, rows: int = 50, cols: int = 200):
        import pexpect
        self.pexpect = pexpect
        env = {"TERM": "xterm", **(env or {})}  # CI has no TERM; rustyline needs a real one
        self.p = pexpect.spawn(FERRY_BIN, ["shell", *args], env=client_env(home, env),
                               cwd=str(cwd) if cwd else None, encoding="utf-8",
                               timeout=timeout, dimensions=(rows, cols))
        self.seen = _Collect()
        self.p.logfile_read = self.seen

    def text(self) -> str:
        """Everything the terminal showed so far, without control sequences."""
        return plain("".join(self.seen.parts))

    def prompt(self, timeout: float = 30) -> str:
        """Waits for the prompt; returns what came before it (plain)."""
        try:
            self.p.expect(PROMPT_RE, timeout=timeout)
        except (self.pexpect.TIMEOUT, self.pexpect.EOF) as e:
            raise AssertionError(f"no prompt within {timeout}s ({type(e).__name__}); screen:\n"
                                 f"{self.text()[-3000:]}") from None
        return plain(self.p.before)

    def run(self, line: str, timeout: float = 30) -> str:
        """Types `line` + Enter and waits for the next prompt; returns the output.

        The line editor switches bracketed paste off (CSI ?2004l) when it hands a line over:
        what follows is the command's output, whatever prompts were redrawn before (a chat
        line printed above the prompt redraws it)."""
        self.p.sendline(line)
        try:
            self.p.expect(r"\x1b\[\?2004l", timeout=timeout)
        except (self.pexpect.TIMEOUT, self.pexpect.EOF) as e:
            raise AssertionError(f"line {line!r} not taken within {timeout}s ({type(e).__name__}); "
                                 f"screen:\n{self.text()[-3000:]}") from None
        return self.prompt(timeout)

    def expect(self, pattern, timeout: float = 30) -> str:
        """Waits for a regex on the terminal; returns the match (plain)."""
        try:
            self.p.expect(pattern, timeout=timeout)
        except (self.pexpect.TIMEOUT, self.pexpect.EOF) as e:
            raise AssertionError(f"{pattern!r} not shown within {timeout}s ({type(e).__name__}); "
                                 f"screen:\n{self.text()[-3000:]}") from None
        return plain(self.p.after if isinstance(self.p.after, str) else "")

    def mark(self) -> int:
        """A position in `text()`, for `wait_text(since=…)`."""
        return len(self.text())

    def wait_text(self, pattern: str, since: int = 0, timeout: float = 30) -> str:
        """Waits until the screen text after `since`, control sequences removed, matches
        `pattern` (DOTALL); returns the match. For what the editor draws in pieces (a prompt
        redrawn with the half-typed line after it)."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.text(), since)
            if m:
                return m.group(0)
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not shown within {timeout}s; screen:\n"
                                     f"{self.text()[-3000:]}")
            try:
                self.p.expect([self.pexpect.TIMEOUT], timeout=0.05)  # reads what is there
            except self.pexpect.EOF:
                raise AssertionError(f"the shell exited before showing {pattern!r}; screen:\n"
                                     f"{self.text()[-3000:]}") from None

    def send(self, keys: str):
        self.p.send(keys)

    def quit(self, timeout: float = 20) -> int:
        """`quit`, then the exit status."""
        self.p.sendline("quit")
        self.p.expect(self.pexpect.EOF, timeout=timeout)
        self.p.close()
        return self.p.exitstatus

    def close(self):
        if self.p.isalive():
            self.p.close(force=True)


def run_shell(home: Path, *args: str, script: str = "", env: dict | None = None,
              cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`ferry shell ARGS…` without a terminal, `script` on stdin."""
    return subprocess.run([FERRY_BIN, "shell", *args], input=script, capture_output=True,
                          text=True, timeout=timeout, env=client_env(home, env), cwd=cwd)


class ChatProc:
    """`ferry chat ARGS…` with stdin and stdout as pipes: `send` writes a line, `wait_line`
    waits for an output line matching a regex. Reader threads keep every line."""

    def __init__(self, home: Path, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([FERRY_BIN, "chat", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=client_env(home, env), preexec_fn=_die_with_parent)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _read(stream, sink):
        for line in stream:
            sink.append(line.rstrip("\n"))

    def send(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_line(self, pattern: str, timeout: float = 20, err: bool = False) -> str:
        rx = re.compile(pattern)
        sink = self.err if err else self.out

        def find():
            for l in list(sink):
                if rx.search(l):
                    return l
            return None
        try:
            return wait_until(find, timeout, 0.02, f"ferry chat {'stderr' if err else 'stdout'} "
                                                   f"line {pattern!r}")
        except AssertionError:
            raise AssertionError(f"no line {pattern!r} within {timeout}s\nstdout: {self.out}\n"
                                 f"stderr: {self.err}") from None

    def finish(self, timeout: float = 20) -> int:
        """Closes stdin (end of input) and waits for the exit status."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        return self.proc.wait(timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
