"""Fixtures for the end-to-end suite: the `ferry` binary, data directories, servers.

Run from the repository root:  python3 -m pytest tests/e2e -q
FERRY_BIN overrides the binary (default: target/debug/ferry).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ferry_e2e import FERRY_BIN, LIVE_SERVERS, Ferry  # noqa: E402

DEFAULT_TEST_TIMEOUT = 120


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test wall-clock limit (SIGALRM)")


@pytest.fixture(scope="session")
def ferry_bin() -> str:
    if not (os.path.isfile(FERRY_BIN) and os.access(FERRY_BIN, os.X_OK)):
        pytest.fail(f"ferry binary not found at {FERRY_BIN} (build it or set FERRY_BIN)", pytrace=False)
    return FERRY_BIN


@pytest.fixture(scope="session")
def make_ferry(ferry_bin, tmp_path_factory):
    """Factory: a fresh data directory wrapped in a `Ferry`. All servers started through
    it are stopped at the end of the session."""
    made: list[Ferry] = []

    def make(name: str = "data") -> Ferry:
        f = Ferry(tmp_path_factory.mktemp(name) / "d")
        made.append(f)
        return f

    yield make
    for f in made:
        for s in f.servers:
            s.stop(timeout=15)
    # pytest keeps the last runs' temp dirs: drop the big payloads, keep logs and small files
    for f in made:
        for dirpath, _dirs, files in os.walk(f.data_dir):
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    if os.lstat(p).st_size > (4 << 20):
                        os.unlink(p)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def srv(make_ferry):
    """A server shared by a module: `alice` (read/write, no quota) and `reader`
    (read-only). Tests use distinct file names so they do not interfere."""
    f = make_ferry("shared")
    alice = f.add_user("alice")
    reader = f.add_user("reader", None, "--read-only")
    server = f.serve("limits.failed_login_delay_ms=50")
    yield SimpleNamespace(ferry=f, server=server, alice=alice, reader=reader)
    server.stop(timeout=15)


@pytest.fixture
def closing():
    """`closing(x)` returns `x` and closes it (`x.close()`) at the end of the test, e.g. IRC
    connections, so a failed test leaves none open."""
    items = []

    def add(x):
        items.append(x)
        return x

    yield add
    for x in reversed(items):
        try:
            x.close()
        except Exception:  # noqa: BLE001
            pass


_uniq = itertools.count()


@pytest.fixture
def uniq(request) -> str:
    """A name unique to this test, safe as a file name."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("/", "_")
    return f"{base[:60]}-{next(_uniq)}"


class WatchdogTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _test_watchdog(request):
    """Fail a test that runs longer than its limit instead of hanging the suite."""
    marker = request.node.get_closest_marker("timeout")
    limit = marker.args[0] if marker else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise WatchdogTimeout(f"test exceeded its {limit}s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and LIVE_SERVERS:
        for s in list(LIVE_SERVERS):
            rep.sections.append(
                (f"ferry serve stderr (last lines) {s.stderr_path.name}", s.stderr_tail(30))
            )
