"""Helpers shared by the end-to-end tests: start the real `ferry` binary, drive it with
its CLI, and talk FTP to it (ftplib, a raw control connection, curl, lftp).

Everything here is bounded: every socket has a timeout, every subprocess a timeout,
every wait a deadline. Servers listen on 127.0.0.1:0 and get a passive port range of
their own below the kernel's ephemeral range.
"""

from __future__ import annotations

import ftplib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FERRY_BIN = os.environ.get("FERRY_BIN") or str(REPO / "target" / "debug" / "ferry")
HOST = "127.0.0.1"

LISTEN_RE = re.compile(r"^listening ftp (\S+):(\d+)$")
CHAT_LISTEN_RE = re.compile(r"^listening (chat|chat-tls) (\S+):(\d+)$")

# Passive ranges: blocks of 200 ports in 20000-29999, starting at a random block so two
# suites running at once on one machine are unlikely to collide.
_PASV_LOCK = threading.Lock()
_PASV_NEXT = [random.randrange(50)]


def passive_range() -> tuple[int, int]:
    with _PASV_LOCK:
        block = _PASV_NEXT[0] % 50
        _PASV_NEXT[0] += 1
    base = 20000 + block * 200
    return base, base + 199


# --------------------------------------------------------------------------- files


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def write_random(path: Path | str, size: int, chunk: int = 1 << 20) -> str:
    """Write `size` random bytes to `path` and return their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            data = os.urandom(min(chunk, left))
            h.update(data)
            f.write(data)
            left -= len(data)
    return h.hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 for files, relative path -> 'dir' for directories."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for d in dirnames:
            out[os.path.normpath(os.path.join(rel_dir, d))] = "dir"
        for fn in filenames:
            out[os.path.normpath(os.path.join(rel_dir, fn))] = sha256_file(os.path.join(dirpath, fn))
    return out


def wait_until(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `pred` until it returns a truthy value; return it, or raise AssertionError."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def tcp_listening(port: int) -> bool:
    """True if some socket is in LISTEN state on `port` (reads /proc, connects nothing)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False


# --------------------------------------------------------------------------- CLI + server


@dataclass
class User:
    name: str
    password: str
    home: Path


class Ferry:
    """One data directory and the `ferry` commands that act on it."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.users: dict[str, User] = {}
        self.servers: list[Server] = []

    def run(self, *args: str, input: str | None = None, timeout: float = 60, check: bool = True):
        cmd = [FERRY_BIN, *args]
        p = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
            )
        return p

    def user_cmd(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60):
        return self.run("user", *args, "--data-dir", str(self.data_dir), input=input, check=check,
                        timeout=timeout)

    def add_user(self, name: str, password: str | None = None, *extra: str, home: Path | None = None) -> User:
        password = password or f"pw-{name}-{random.randrange(10**9)}"
        args = ["add", name, "--password-stdin", *extra]
        if home is not None:
            args += ["--home", str(home)]
        self.user_cmd(*args, input=password + "\n")
        u = User(name, password, Path(home) if home else self.data_dir / "homes" / name)
        self.users[name] = u
        return u

    def list_users(self) -> list[dict]:
        p = self.user_cmd("list", "--json")
        return json.loads(p.stdout)

    def user_info(self, name: str) -> dict:
        for u in self.list_users():
            if u["name"] == name:
                return u
        raise AssertionError(f"user {name} not in `ferry user list --json`")

    def serve(self, *sets: str, extra_args: tuple[str, ...] = (), wait: bool = True) -> "Server":
        s = Server(self, sets, extra_args)
        self.servers.append(s)
        s.start(wait=wait)
        return s

    def serve_tls(self, *sets: str, listen: tuple[str, ...] = (f"{HOST}:0",),
                  listen_implicit: tuple[str, ...] = (), extra_args: tuple[str, ...] = (),
                  wait: bool = True) -> "TlsServer":
        """A server with explicit listeners (`--listen`, `--listen-implicit`); waits until
        every listener and the TLS policy line are printed."""
        s = TlsServer(self, sets, listen=listen, listen_implicit=listen_implicit, extra_args=extra_args)
        self.servers.append(s)
        s.start(wait=wait)
        return s

    def print_fingerprint(self) -> str:
        p = self.run("serve", "--data-dir", str(self.data_dir), "--print-fingerprint", timeout=60)
        return p.stdout.strip()

    @property
    def tls_cert(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    @property
    def xferlog(self) -> Path:
        return self.data_dir / "logs" / "xferlog"


LIVE_SERVERS: list["Server"] = []


try:  # resolved here, not in the forked child: the child must not import or take locks
    import ctypes
    _PRCTL = ctypes.CDLL(None).prctl
except Exception:  # noqa: BLE001
    _PRCTL = None


def _die_with_parent():
    """In the child before exec: get SIGTERM if the test runner dies, so no server outlives it."""
    if _PRCTL is not None:
        _PRCTL(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


class Server:
    def __init__(self, ferry: Ferry, sets, extra_args=()):
        self.ferry = ferry
        self.sets = list(sets)
        self.extra_args = list(extra_args)
        self.pasv_lo, self.pasv_hi = passive_range()
        self.port: int | None = None
        self.host = HOST
        self.proc: subprocess.Popen | None = None
        self.stdout_lines: list[str] = []
        self._listening = threading.Event()
        self.chat_port: int | None = None
        self.chat_tls_port: int | None = None
        n = len(ferry.servers)
        self.stderr_path = ferry.data_dir.parent / f"{ferry.data_dir.name}-serve{n}.stderr.log"

    def _command(self) -> list[str]:
        cmd = [FERRY_BIN, "serve", "--data-dir", str(self.ferry.data_dir), "--listen", f"{HOST}:0",
               "--passive-ports", f"{self.pasv_lo}-{self.pasv_hi}"]
        # FERRY_E2E_SETS="key=value;key=value": settings for every server of a run, before the
        # test's own (which win), to run a suite again on another code path.
        for s in [*filter(None, os.environ.get("FERRY_E2E_SETS", "").split(";")), *self.sets]:
            cmd += ["--set", s]
        cmd += self._chat_args()
        cmd += self.extra_args
        return cmd

    def _chat_args(self) -> list[str]:
        """`--chat-listen 127.0.0.1:0` unless the test chose its own chat listeners: the chat
        service's default port (6667) would collide between servers. Left out for a binary
        without chat."""
        if not ferry_has_chat():
            return []
        if any(a.startswith("--chat-listen") and not a.startswith("--chat-listen-tls")
               for a in self.extra_args):
            return []
        if any(s.startswith("chat.listen=") for s in self.sets):
            return []
        return ["--chat-listen", f"{HOST}:0"]

    def start(self, wait: bool = True, timeout: float = 30):
        cmd = self._command()
        self.cmd = cmd
        self._stderr_file = open(self.stderr_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr_file, env=env, preexec_fn=_die_with_parent)
        LIVE_SERVERS.append(self)
        t = threading.Thread(target=self._read_stdout, daemon=True)
        t.start()
        if wait:
            self.wait_listening(timeout)
        return self

    def _read_stdout(self):
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stdout_lines.append(line)
            m = CHAT_LISTEN_RE.match(line)
            if m:
                if m.group(1) == "chat" and self.chat_port is None:
                    self.chat_port = int(m.group(3))
                elif m.group(1) == "chat-tls" and self.chat_tls_port is None:
                    self.chat_tls_port = int(m.group(3))
            self._on_stdout_line(line)

    def _on_stdout_line(self, line: str):
        m = LISTEN_RE.match(line)
        if m and self.port is None:
            self.host = m.group(1)
            self.port = int(m.group(2))
            self._listening.set()

    def wait_listening(self, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ferry serve exited with {self.proc.returncode} before listening\n"
                    f"cmd: {' '.join(self.cmd)}\nstdout: {self.stdout_lines}\nstderr:\n{self.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"ferry serve printed no 'listening ftp' line within {timeout}s\n"
                    f"stdout: {self.stdout_lines}\nstderr:\n{self.stderr_tail()}"
                )
        assert self.port and self.port > 0, self.stdout_lines

    def stderr_text(self) -> str:
        try:
            self._stderr_file.flush()
        except Exception:
            pass
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def wait_stderr(self, pred, timeout: float = 10, what: str = "log line"):
        """Wait for a stderr line satisfying `pred`; return that line."""
        def find():
            for line in self.stderr_text().splitlines():
                if pred(line):
                    return line
            return None
        return wait_until(find, timeout, 0.1, what)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal the server and wait for it; SIGKILL if it does not exit in `timeout`.
        Returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._close()
                return None
        self._close()
        return self.proc.returncode

    def _close(self):
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        try:
            self._stderr_file.close()
        except Exception:
            pass

    # -- clients

    def ftp(self, user: User | None = None, timeout: float = 30) -> ftplib.FTP:
        f = ftplib.FTP(timeout=timeout, encoding="utf-8")
        f.connect(self.host, self.port, timeout=timeout)
        if user is not None:
            f.login(user.name, user.password)
        return f

    def ctrl(self, user: User | None = None, timeout: float = 15, greet: bool = True) -> "Ctrl":
        c = Ctrl(self.host, self.port, timeout=timeout)
        if greet:
            r = c.reply()
            assert r.code == 220, f"greeting: expected 220, got {r}"
        if user is not None:
            c.login(user)
        return c

    def url(self, path: str = "") -> str:
        return f"ftp://{self.host}:{self.port}/" + urllib.parse.quote(path.lstrip("/"))

    # -- chat (IRC)

    def wait_chat(self, tls: bool = False, timeout: float = 10) -> int:
        """The chat listener's port (`listening chat[-tls] HOST:PORT` on stdout)."""
        attr = "chat_tls_port" if tls else "chat_port"
        return wait_until(lambda: getattr(self, attr), timeout, 0.02,
                          f"a 'listening chat{'-tls' if tls else ''}' line (stdout: {self.stdout_lines})")

    def irc(self, tls: bool = False, timeout: float = 15, context: ssl.SSLContext | None = None) -> "IrcConn":
        """A raw, unregistered IRC connection to the chat service (TLS on the chat-tls port)."""
        port = self.wait_chat(tls)
        return IrcConn(HOST, port, timeout=timeout, tls=tls, context=context)

    def irc_user(self, user: "User", how: str = "pass", tls: bool = False, nick: str | None = None,
                 timeout: float = 15) -> "IrcConn":
        """An IRC connection registered as `user` (`how`: "pass" for PASS account:password,
        "sasl" for SASL PLAIN), its registration burst and auto-join read."""
        c = self.irc(tls=tls, timeout=timeout)
        try:
            c.register(user, how=how, nick=nick)
        except BaseException:
            c.close()
            raise
        return c


# --------------------------------------------------------------------------- raw control connection


class ConnectionClosed(Exception):
    pass


@dataclass
class Reply:
    code: int
    text: str  # all lines, joined with "\n"

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def last(self) -> str:
        return self.lines[-1]

    def __str__(self):
        return repr(self.text)


class Ctrl:
    """A raw FTP control connection: send exact bytes, read replies one by one."""

    def __init__(self, host: str, port: int, timeout: float = 15):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.host = host
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, t: float):
        self.sock.settimeout(t)

    def sendraw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, line: str | bytes, eol: bytes = b"\r\n"):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.sock.sendall(line + eol)

    def _read_line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionClosed(f"connection closed; unparsed bytes: {self.buf!r}")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self) -> Reply:
        first = self._read_line()
        if len(first) < 3 or not first[:3].isdigit():
            raise AssertionError(f"malformed reply line: {first!r}")
        code = first[:3]
        lines = [first]
        if first[3:4] == b"-":
            while True:
                line = self._read_line()
                lines.append(line)
                if line[:3] == code and line[3:4] == b" ":
                    break
        return Reply(int(code), "\n".join(l.decode("utf-8", "replace") for l in lines))

    def cmd(self, line: str | bytes) -> Reply:
        self.send(line)
        return self.reply()

    def expect(self, line: str | bytes, *codes: int) -> Reply:
        r = self.cmd(line)
        assert r.code in codes, f"sent {line!r}: expected {codes}, got {r}"
        return r

    def login(self, user: User):
        self.expect(f"USER {user.name}", 331)
        self.expect(f"PASS {user.password}", 230)

    def reads_eof(self, timeout: float = 10) -> bool:
        """Drain until EOF; True if the server closed the connection within `timeout`."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    return True
                if not data:
                    return True
                self.buf += data
            return False
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)

    # -- data connections

    def pasv(self) -> socket.socket:
        r = self.expect("PASV", 227)
        m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", r.text)
        assert m, f"unparseable PASV reply {r}"
        port = int(m.group(5)) * 256 + int(m.group(6))
        return socket.create_connection((self.host, port), timeout=self.sock.gettimeout())

    def pasv_port(self) -> int:
        r = self.expect("PASV", 227)
        m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", r.text)
        assert m, f"unparseable PASV reply {r}"
        return int(m.group(5)) * 256 + int(m.group(6))

    def epsv_port(self) -> int:
        r = self.expect("EPSV", 229)
        m = re.search(r"\(\|\|\|(\d+)\|\)", r.text)
        assert m, f"unparseable EPSV reply {r}"
        return int(m.group(1))

    def epsv(self) -> socket.socket:
        return socket.create_connection((self.host, self.epsv_port()), timeout=self.sock.gettimeout())

    def retr(self, path: str) -> bytes:
        """PASV + RETR; returns the bytes; asserts 150/125 then 226."""
        data = self.pasv()
        self.expect(f"RETR {path}", 150, 125)
        out = recv_all(data)
        self.expect_reply(226)
        return out

    def stor(self, path: str, payload: bytes, verb: str = "STOR") -> Reply:
        data = self.pasv()
        self.expect(f"{verb} {path}", 150, 125)
        data.sendall(payload)
        data.close()
        return self.reply()

    def listing(self, cmd: str) -> tuple[Reply, bytes]:
        """PASV + a listing command; returns (final reply, raw data). If the server refuses
        the command before opening the transfer, the data is empty."""
        data = self.pasv()
        r = self.cmd(cmd)
        if r.code in (125, 150):
            out = recv_all(data)
            return self.reply(), out
        data.close()
        return r, b""

    def expect_reply(self, *codes: int) -> Reply:
        r = self.reply()
        assert r.code in codes, f"expected {codes}, got {r}"
        return r


def recv_all(sock: socket.socket, timeout: float = 60, limit: int | None = None) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    n = 0
    try:
        while True:
            d = sock.recv(1 << 20)
            if not d:
                break
            chunks.append(d)
            n += len(d)
            if limit is not None and n >= limit:
                break
    finally:
        if limit is None:
            sock.close()
    return b"".join(chunks)


# --------------------------------------------------------------------------- ftplib helpers


def ftp_reply_code(exc_or_reply) -> int:
    s = str(exc_or_reply)
    return int(s[:3])


def ftp_try(ftp: ftplib.FTP, line: str) -> tuple[int, str]:
    """sendcmd that returns (code, text) for any reply instead of raising."""
    try:
        r = ftp.sendcmd(line)
    except ftplib.all_errors as e:
        r = str(e)
        if not r[:3].isdigit():
            raise
    return int(r[:3]), r


def ftp_retr(ftp: ftplib.FTP, path: str, rest: int | None = None) -> bytes:
    buf = bytearray()
    ftp.retrbinary(f"RETR {path}", buf.extend, rest=rest)
    return bytes(buf)


def ftp_stor(ftp: ftplib.FTP, path: str, data: bytes, rest: int | None = None, verb: str = "STOR") -> str:
    import io
    return ftp.storbinary(f"{verb} {path}", io.BytesIO(data), rest=rest)


def ftp_stor_reply(ftp: ftplib.FTP, path: str, data: bytes, rest: int | None = None, verb: str = "STOR",
                   chunk: int = 64 << 10) -> str:
    """Upload and return the final reply text whatever it is (226, 552, ...). Unlike
    storbinary, a server that closes the data connection early (quota exceeded) does not
    turn into a BrokenPipeError: the control reply is still read."""
    ftp.voidcmd("TYPE I")
    try:
        conn = ftp.transfercmd(f"{verb} {path}", rest)
    except ftplib.error_perm as e:
        return str(e)
    except ftplib.error_temp as e:
        return str(e)
    try:
        for i in range(0, len(data), chunk):
            conn.sendall(data[i:i + chunk])
    except OSError:
        pass
    finally:
        conn.close()
    try:
        return ftp.voidresp()
    except ftplib.all_errors as e:
        return str(e)


def ftp_size(ftp: ftplib.FTP, path: str) -> int:
    r = ftp.sendcmd(f"SIZE {path}")
    assert r.startswith("213 "), r
    return int(r[4:].strip())


# --------------------------------------------------------------------------- external clients


def curl(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["curl", "-sS", "--connect-timeout", "10", "--max-time", str(int(timeout)), *args]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}\nstderr: {p.stderr.decode('utf-8', 'replace')[-3000:]}"
        )
    return p


def curl_popen(*args: str, timeout: float = 120) -> subprocess.Popen:
    cmd = ["curl", "-sS", "--connect-timeout", "10", "--max-time", str(int(timeout)), *args]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def curl_replies(stderr: bytes) -> list[str]:
    """Server replies as shown by `curl -v` (lines starting with '< ')."""
    return [l[2:] for l in stderr.decode("utf-8", "replace").splitlines() if l.startswith("< ")]


LFTP_PRELUDE = (
    "set ftp:ssl-allow no; set net:max-retries 1; set net:reconnect-interval-base 1; "
    "set net:timeout 20; set cmd:fail-exit yes; set xfer:clobber yes; set ftp:charset utf-8; "
    "set file:charset utf-8; set cmd:interactive no; "
)


_LFTP_HOME: list[str] = []


def _lftp_home() -> str:
    if not _LFTP_HOME:
        import tempfile
        _LFTP_HOME.append(tempfile.mkdtemp(prefix="ferry-e2e-lftp-home-"))
    return _LFTP_HOME[0]


def lftp(server: Server, user: User, script: str, timeout: float = 240, cwd: Path | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which("lftp") is None:
        raise AssertionError("lftp is not installed (apt-get install -y lftp)")
    cmd = ["lftp", "-u", f"{user.name},{user.password}", "-p", str(server.port),
           "-e", LFTP_PRELUDE + script + "; quit", server.host]
    # a private HOME: lftp writes its history and transfer log there
    env = dict(os.environ, HOME=_lftp_home(), LC_ALL="C.UTF-8", LANG="C.UTF-8")
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd, env=env,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(
            f"lftp script {script!r} exited {p.returncode}\nstdout: {p.stdout.decode('utf-8','replace')[-3000:]}"
            f"\nstderr: {p.stderr.decode('utf-8','replace')[-3000:]}"
        )
    return p


def kill_when(proc: subprocess.Popen, pred, timeout: float, what: str) -> None:
    """SIGKILL `proc` as soon as `pred()` is true; fail if it never becomes true or the
    process exits first (the transfer finished before it could be interrupted)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if pred():
                assert proc.poll() is None, f"client exited ({proc.returncode}) before it could be killed: {what}"
                proc.kill()
                proc.wait(10)
                return
            if proc.poll() is not None:
                err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
                raise AssertionError(f"client exited with {proc.returncode} before {what}: {err[-2000:]}")
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def dir_growth(root: Path, baseline: dict[str, int]) -> int:
    """Largest growth (bytes) of any file under `root` compared to `baseline`
    (path -> size), hidden temp files included."""
    best = 0
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            try:
                sz = os.stat(p).st_size
            except FileNotFoundError:
                continue
            best = max(best, sz - baseline.get(p, 0))
    return best


def dir_sizes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            try:
                out[p] = os.stat(p).st_size
            except FileNotFoundError:
                pass
    return out


def disk_usage_bytes(root: Path) -> int:
    """Sum of the sizes of the regular files under `root` (what a ledger should count)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = os.path.join(dirpath, fn)
            st = os.lstat(p)
            if os.path.isfile(p) and not os.path.islink(p):
                total += st.st_size
    return total


# --------------------------------------------------------------------------- TLS (FTPS)


LISTEN_ANY_RE = re.compile(r"^listening (ftps?) (\S+):(\d+)$")
TLS_CERT_RE = re.compile(r"^tls certificate (.+) sha256 ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$")
TLS_REQUIRED_PREFIX = "tls required:"


def fingerprint_der(der: bytes) -> str:
    """SHA-256 of a DER certificate as `AA:BB:...` (upper case), the form ferry prints."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def fingerprint_pem_file(path: Path | str) -> str:
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(Path(path).read_text()))


def tls_client_context(cafile: Path | str | None = None, max_version: ssl.TLSVersion | None = None,
                       min_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context: verifying against `cafile` (hostname checked), else no verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is not None:
        ctx.load_verify_locations(cafile=str(cafile))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        ctx.maximum_version = max_version
    if min_version is not None:
        ctx.minimum_version = min_version
    return ctx


class TlsServer(Server):
    """`ferry serve` with the listeners given (`listen`: FTP with explicit TLS,
    `listen_implicit`: ftps://). Parses the startup lines: `tls certificate <path> sha256 <fp>`,
    every `listening ftp|ftps host:port`, `tls required: ...`. `port` is the first FTP
    listener's (the first ftps one's if there is none), `ftps_port` the first ftps one's.
    A listener on 0.0.0.0 is reached through 127.0.0.1."""

    def __init__(self, ferry: Ferry, sets, listen=(f"{HOST}:0",), listen_implicit=(), extra_args=()):
        super().__init__(ferry, sets, extra_args)
        self.listen = list(listen)
        self.listen_implicit = list(listen_implicit)
        self.listeners: list[tuple[str, str, int]] = []  # (kind, printed host, port)
        self.ftps_port: int | None = None
        self.cert_path: str | None = None
        self.fingerprint: str | None = None
        self.tls_required: str | None = None

    def _command(self) -> list[str]:
        cmd = [FERRY_BIN, "serve", "--data-dir", str(self.ferry.data_dir)]
        for a in self.listen:
            cmd += ["--listen", a]
        for a in self.listen_implicit:
            cmd += ["--listen-implicit", a]
        cmd += ["--passive-ports", f"{self.pasv_lo}-{self.pasv_hi}"]
        for s in self.sets:
            cmd += ["--set", s]
        cmd += self._chat_args()
        cmd += self.extra_args
        return cmd

    def _on_stdout_line(self, line: str):
        m = TLS_CERT_RE.match(line)
        if m:
            self.cert_path, self.fingerprint = m.group(1), m.group(2)
            return
        m = LISTEN_ANY_RE.match(line)
        if m:
            kind, host, port = m.group(1), m.group(2), int(m.group(3))
            self.listeners.append((kind, host, port))
            if kind == "ftps" and self.ftps_port is None:
                self.ftps_port = port
            return
        if line.startswith(TLS_REQUIRED_PREFIX) and self.tls_required is None:
            self.tls_required = line[len(TLS_REQUIRED_PREFIX):].strip()
            ftp = [p for k, _h, p in self.listeners if k == "ftp"]
            ftps = [p for k, _h, p in self.listeners if k == "ftps"]
            self.host = HOST
            self.port = ftp[0] if ftp else (ftps[0] if ftps else None)
            self._listening.set()

    def wait_listening(self, timeout: float = 30):
        super().wait_listening(timeout)
        want = len(self.listen) + len(self.listen_implicit)
        assert len(self.listeners) == want, \
            f"expected {want} 'listening' lines before 'tls required:', got {self.stdout_lines}"

    def tls_ctrl(self, user: User | None = None, timeout: float = 15, context: ssl.SSLContext | None = None,
                 implicit: bool = False, prot: str | None = "P", server_hostname: str | None = None) -> "TlsCtrl":
        """A control connection secured with AUTH TLS (or on the implicit port), logged in
        as `user` if given, then `PBSZ 0` + `PROT <prot>` unless `prot` is None."""
        port = self.ftps_port if implicit else self.port
        assert port, f"no {'ftps' if implicit else 'ftp'} listener: {self.listeners}"
        c = TlsCtrl(self.host, port, timeout=timeout, context=context, implicit=implicit,
                    server_hostname=server_hostname)
        try:
            r = c.reply()
            assert r.code == 220, f"greeting: expected 220, got {r}"
            if not implicit:
                c.auth()
            if user is not None:
                c.login(user)
                if prot is not None:
                    c.expect("PBSZ 0", 200)
                    c.expect(f"PROT {prot}", 200)
        except BaseException:
            c.close()
            raise
        return c

    def ftps_url(self, path: str = "") -> str:
        assert self.ftps_port, f"no ftps listener: {self.listeners}"
        return f"ftps://{self.host}:{self.ftps_port}/" + urllib.parse.quote(path.lstrip("/"))

    def ftp_tls(self, user: User | None = None, timeout: float = 30,
                context: ssl.SSLContext | None = None) -> ftplib.FTP_TLS:
        """Python's ftplib FTP_TLS: AUTH TLS, login, PROT P. (It cannot resume TLS sessions
        on data connections.)"""
        f = ftplib.FTP_TLS(context=context or tls_client_context(), timeout=timeout, encoding="utf-8")
        f.connect(self.host, self.port, timeout=timeout)
        if user is not None:
            f.login(user.name, user.password)  # FTP_TLS.login sends AUTH TLS first
            f.prot_p()
        return f


class TlsCtrl(Ctrl):
    """A raw control connection that can be upgraded to TLS (`auth`) or is TLS from the
    start (`implicit`), with TLS data connections that resume the control connection's
    session (or deliberately do not)."""

    def __init__(self, host: str, port: int, timeout: float = 15, context: ssl.SSLContext | None = None,
                 implicit: bool = False, server_hostname: str | None = None):
        super().__init__(host, port, timeout=timeout)
        self.context = context or tls_client_context()
        self.server_hostname = server_hostname or host
        self.tls = False
        if implicit:
            self._wrap()

    def _wrap(self):
        assert not self.buf, f"bytes received after the AUTH reply, before the handshake: {self.buf!r}"
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.server_hostname)
        self.tls = True

    def auth(self, mech: str = "TLS") -> Reply:
        r = self.expect(f"AUTH {mech}", 234)
        self._wrap()
        return r

    @property
    def session(self) -> ssl.SSLSession | None:
        return self.sock.session if self.tls else None

    def wrap_data(self, raw: socket.socket, reuse: bool = True, context: ssl.SSLContext | None = None,
                  suppress_ragged_eofs: bool = True) -> ssl.SSLSocket:
        """TLS client handshake on a data connection, offering the control connection's
        session when `reuse` (it must be the control connection's context then)."""
        ctx = context or self.context
        session = self.session if reuse else None
        return ctx.wrap_socket(raw, server_hostname=self.server_hostname, session=session,
                               suppress_ragged_eofs=suppress_ragged_eofs)

    def tls_transfer_start(self, command: str, reuse: bool = True, context: ssl.SSLContext | None = None,
                           suppress_ragged_eofs: bool = True) -> ssl.SSLSocket:
        """PASV, connect, send `command`, expect 150/125, then the TLS handshake on the data
        connection (after the preliminary reply, as ftplib and curl do it)."""
        raw = self.pasv()
        try:
            self.expect(command, 150, 125)
            return self.wrap_data(raw, reuse=reuse, context=context, suppress_ragged_eofs=suppress_ragged_eofs)
        except BaseException:
            raw.close()
            raise

    def tls_retr(self, path: str) -> bytes:
        data = self.tls_transfer_start(f"RETR {path}")
        assert data.session_reused, "the data connection did not resume the control connection's TLS session"
        out = recv_all(data)
        self.expect_reply(226)
        return out

    def tls_list(self, cmd: str = "NLST") -> bytes:
        data = self.tls_transfer_start(cmd)
        out = recv_all(data)
        self.expect_reply(226)
        return out

    def tls_stor(self, path: str, payload: bytes, verb: str = "STOR") -> Reply:
        """Upload over a TLS data connection ending with close_notify; returns the final reply."""
        data = self.tls_transfer_start(f"{verb} {path}")
        try:
            data.sendall(payload)
            try:
                data.unwrap()  # close_notify (and wait for the server's)
            except (ssl.SSLError, OSError):
                pass
        finally:
            data.close()
        return self.reply()


def tls_client_hello(server_hostname: str = "localhost") -> bytes:
    """The bytes of a real TLS ClientHello (to send partially: a stalled handshake)."""
    ctx = tls_client_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:16]
    return hello


def rst_close(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0): no close_notify, no FIN."""
    import struct
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def lftp_tls(server: Server, user: User, script: str, timeout: float = 240, cwd: Path | None = None,
             check: bool = True, priority: str | None = None) -> subprocess.CompletedProcess:
    """lftp forced onto TLS for control and data (certificate not verified); `priority` is
    a GnuTLS priority string (e.g. "NORMAL:-VERS-TLS1.3" for TLS 1.2)."""
    prelude = ("set ftp:ssl-allow yes; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; "
               "set ftp:ssl-protect-list yes; set ssl:verify-certificate no; ")
    if priority is not None:
        prelude += f'set ssl:priority "{priority}"; '
    return lftp(server, user, prelude + script, timeout=timeout, cwd=cwd, check=check)


# --------------------------------------------------------------------------- chat (IRC)


_HAS_CHAT: list[bool] = []


def ferry_has_chat() -> bool:
    """Whether the binary has the chat service (`ferry serve --chat-listen`)."""
    if not _HAS_CHAT:
        try:
            p = subprocess.run([FERRY_BIN, "serve", "--help"], capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            _HAS_CHAT.append("--chat-listen" in p.stdout)
        except (OSError, subprocess.SubprocessError):
            _HAS_CHAT.append(False)
    return _HAS_CHAT[0]


@dataclass
class IrcMsg:
    raw: str
    prefix: str
    command: str  # upper case; numerics as "001"
    params: list[str]
    tags: str = ""

    @property
    def nick(self) -> str:
        """The sender's nick (the prefix up to '!')."""
        return self.prefix.split("!", 1)[0]

    def param(self, i: int, default: str = "") -> str:
        return self.params[i] if -len(self.params) <= i < len(self.params) else default

    @property
    def text(self) -> str:
        """The last parameter (the trailing one, usually)."""
        return self.params[-1] if self.params else ""

    def __str__(self):
        return self.raw


def parse_irc(line: str) -> IrcMsg:
    """A lenient parser of one IRC line (without CR LF): [@tags] [:prefix] COMMAND params [:trailing]."""
    rest, tags, prefix = line, "", ""
    if rest.startswith("@"):
        tags, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        head, trailing = "", [rest[1:]]
    elif " :" in rest:
        head, _, t = rest.partition(" :")
        trailing = [t]
    else:
        head, trailing = rest, []
    words = head.split()
    command = words[0].upper() if words else ""
    return IrcMsg(line, prefix, command, words[1:] + trailing, tags)


def sasl_plain(authcid: str, password: str, authzid: str = "") -> str:
    """The base64 AUTHENTICATE payload of SASL PLAIN."""
    import base64
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


class IrcConn:
    """A raw IRC client connection: send exact lines, read parsed messages with deadlines.

    Every message read is appended to `log`; `wait_for` consumes messages from a cursor
    (`pos`) and returns the first that matches; `mark()`/`since()` look at everything that
    arrived after a point whatever was consumed. A server PING is answered automatically
    (`auto_pong`)."""

    _tokens = iter(range(1, 1 << 62))

    def __init__(self, host: str, port: int, timeout: float = 15, tls: bool = False,
                 context: ssl.SSLContext | None = None, rcvbuf: int | None = None):
        if rcvbuf is None:
            sock = socket.create_connection((host, port), timeout=timeout)
        else:  # a small receive buffer, set before the handshake so the window stays small
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect((host, port))
        if tls:
            sock = (context or tls_client_context()).wrap_socket(sock, server_hostname=host)
        sock.settimeout(timeout)
        self.sock = sock
        self.host = host
        self.port = port
        self.timeout = timeout
        self.buf = b""
        self.log: list[IrcMsg] = []
        self.pos = 0
        self.eof = False
        self.nick: str | None = None
        self.auto_pong = True

    # -- plumbing

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def sendraw(self, data: bytes):
        self.sock.sendall(data)

    def send(self, line: str | bytes, eol: bytes = b"\r\n"):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.sock.sendall(line + eol)

    def _read_one(self, deadline: float) -> IrcMsg:
        """Read one more message into the log. Raises ConnectionClosed at EOF, socket.timeout
        at the deadline."""
        while b"\n" not in self.buf:
            if self.eof:
                raise ConnectionClosed(f"connection closed; unparsed bytes: {self.buf!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except ssl.SSLError as e:  # a TLS peer that vanished without close_notify
                if "EOF" in str(e) or "UNEXPECTED" in str(e).upper():
                    data = b""
                else:
                    raise
            if not data:
                self.eof = True
                continue
            self.buf += data
        raw, self.buf = self.buf.split(b"\n", 1)
        msg = parse_irc(raw.rstrip(b"\r").decode("utf-8", "replace"))
        self.log.append(msg)
        if self.auto_pong and msg.command == "PING":
            try:
                self.send("PONG :" + msg.text)
            except OSError:
                pass
        return msg

    def recent(self, n: int = 25) -> str:
        return "\n".join("  " + m.raw for m in self.log[-n:])

    # -- reading

    def wait_for(self, pred, timeout: float | None = None, what: str | None = None) -> IrcMsg:
        """The first message from the cursor on that matches `pred`: a callable, a command
        name or numeric, or a tuple of them. Consumes up to it."""
        if isinstance(pred, str):
            want = (pred.upper(),)
            what = what or pred
            pred = lambda m, want=want: m.command in want  # noqa: E731
        elif isinstance(pred, tuple):
            want = tuple(p.upper() for p in pred)
            what = what or "/".join(want)
            pred = lambda m, want=want: m.command in want  # noqa: E731
        what = what or "a matching message"
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            while self.pos < len(self.log):
                m = self.log[self.pos]
                self.pos += 1
                if pred(m):
                    return m
            try:
                self._read_one(deadline)
            except socket.timeout:
                raise AssertionError(f"timed out waiting for {what}; last lines received:\n{self.recent()}") \
                    from None
            except ConnectionClosed:
                raise AssertionError(f"connection closed while waiting for {what}; last lines:\n{self.recent()}") \
                    from None

    def expect(self, *commands: str, timeout: float | None = None) -> IrcMsg:
        return self.wait_for(tuple(commands), timeout)

    def mark(self) -> int:
        return len(self.log)

    def since(self, mark: int) -> list[IrcMsg]:
        return self.log[mark:]

    def drain(self, quiet: float = 0.3, timeout: float = 5) -> list[IrcMsg]:
        """Read until nothing arrives for `quiet` seconds (or `timeout`); returns the new
        messages and moves the cursor to the end."""
        start = len(self.log)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._read_one(min(deadline, time.monotonic() + quiet))
        except (socket.timeout, ConnectionClosed):
            pass
        self.pos = len(self.log)
        return self.log[start:]

    def sync(self, timeout: float | None = None) -> list[IrcMsg]:
        """PING with a fresh token and wait for its PONG: everything the server queued for
        this connection before it read the PING has then arrived. Returns the messages
        that arrived meanwhile (before the PONG); the cursor moves past the PONG."""
        token = f"sync-{next(self._tokens)}"
        start = len(self.log)
        self.send(f"PING :{token}")
        self.wait_for(lambda m: m.command == "PONG" and m.text == token, timeout, f"PONG {token}")
        return [m for m in self.log[start:] if not (m.command == "PONG" and m.text == token)]

    def start_reader(self) -> threading.Thread:
        """Read in a background thread (into `log`) until `stop_reader()` or EOF; meanwhile
        look at the log with `poll_for` only."""
        self._stop = threading.Event()

        def run():
            while not self._stop.is_set():
                try:
                    self._read_one(time.monotonic() + 0.2)
                except socket.timeout:
                    continue
                except (ConnectionClosed, OSError):
                    return

        self._reader = threading.Thread(target=run, daemon=True)
        self._reader.start()
        return self._reader

    def stop_reader(self):
        self._stop.set()
        self._reader.join(5)

    def poll_for(self, pred, timeout: float, what: str = "a matching message", start: int = 0) -> IrcMsg:
        """With a background reader: wait until a message from index `start` of the log
        matches `pred`."""
        def find():
            for m in self.log[start:]:
                if pred(m):
                    return m
            return None
        try:
            return wait_until(find, timeout, 0.02, what)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; last lines received:\n{self.recent()}") from None

    def closed(self, timeout: float = 10) -> bool:
        """Read (keeping the messages) until EOF; True if the server closed within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._read_one(deadline)
        except ConnectionClosed:
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    # -- registration

    def register(self, user: "User | None" = None, how: str = "pass", nick: str | None = None,
                 password: str | None = None, join: bool = True, timeout: float | None = None) -> IrcMsg:
        """Register and return the 001. `how`: "pass" (PASS account:password), "pass-nick"
        (PASS password with NICK = account), "sasl" (CAP LS 302 + SASL PLAIN), "none" (no
        login). With `join`, also waits for the end of the auto-joined room's NAMES and the
        history after it (a PING round trip)."""
        name = user.name if user else (nick or "guest")
        pw = password if password is not None else (user.password if user else "")
        nick = nick or name
        if how == "sasl":
            self.send("CAP LS 302")
            self.send(f"NICK {nick}")
            self.send(f"USER {name} 0 * :Ferry e2e {name}")
            ls = self.expect("CAP", timeout=timeout)
            assert ls.param(1) == "LS" and "sasl" in ls.text, f"CAP LS reply: {ls}"
            self.send("CAP REQ :sasl")
            ack = self.expect("CAP", timeout=timeout)
            assert ack.param(1) == "ACK" and ack.text.split() == ["sasl"], f"CAP REQ sasl reply: {ack}"
            self.send("AUTHENTICATE PLAIN")
            plus = self.expect("AUTHENTICATE", timeout=timeout)
            assert plus.params == ["+"], plus
            self.send(f"AUTHENTICATE {sasl_plain(name, pw)}")
            self.expect("900", timeout=timeout)
            self.expect("903", timeout=timeout)
            self.send("CAP END")
        else:
            if how == "pass":
                self.send(f"PASS {name}:{pw}")
            elif how == "pass-nick":
                self.send(f"PASS {pw}")
            else:
                assert how == "none", how
            self.send(f"NICK {nick}")
            self.send(f"USER {name} 0 * :Ferry e2e {name}")
        welcome = self.wait_for(lambda m: m.command in ("001", "464", "904", "ERROR", "451"), timeout, "001")
        assert welcome.command == "001", f"registration refused: {welcome}\n{self.recent()}"
        self.nick = welcome.param(0)
        if join:
            self.wait_for(lambda m: m.command == "366", timeout, "366 after the auto-join")
            self.sync(timeout)
        return welcome


def lines_where(msgs: list[IrcMsg], command: str, text: str | None = None, target: str | None = None) -> list[IrcMsg]:
    """The messages with this command (and trailing text / first parameter)."""
    return [m for m in msgs if m.command == command.upper()
            and (text is None or m.text == text) and (target is None or m.param(0) == target)]


def db_execute(ferry: Ferry, sql: str, params: tuple = ()) -> int:
    """Run one statement on the data directory's `ferry.db` (for settings the CLI has no
    command for); returns the number of rows changed."""
    import sqlite3
    con = sqlite3.connect(str(ferry.data_dir / "ferry.db"), timeout=10)
    try:
        cur = con.execute(sql, params)
        con.commit()
        return cur.rowcount
    finally:
        con.close()


def db_query(ferry: Ferry, sql: str, params: tuple = ()) -> list[tuple]:
    import sqlite3
    con = sqlite3.connect(str(ferry.data_dir / "ferry.db"), timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def proc_rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS), KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
