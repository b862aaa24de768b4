#!/usr/bin/env bash
# Where the sessions workload's first wave spends its time: a fresh Ferry, 50 logins (the
# harness's login workload runs before sessions, so the credential cache is warm), then waves of
# the harness's sessions workload with one round each (C clients start at once: connect, login,
# TYPE I, LIST, RETR 1 MiB, QUIT), each traced with `perf record -e sched:sched_switch`. Prints,
# per wave, its p50/p99, the client's CPU per session, and how both CPUs spent the wave: on the
# client (ftpload), on Ferry, idle, or elsewhere.
#
#   bench/first_wave.sh [--waves N] [--clients C] [--no-build] [--ferry BIN]
#
# Why: the session p99 of bench/run.sh (2,000 sessions, 200 at a time) is the first wave, whose
# 200 sessions start together and end together. Later waves overlap with each other; the first
# one shows what 200 simultaneous sessions cost the client and the server (bench/README.md).
# Needs root (perf's system-wide tracing), perf, 2+ CPUs, and the harness set up
# (bench/run.sh --setup). Writes bench/results/<timestamp>-first-wave/.
set -euo pipefail

# shellcheck source=bench/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"
FTPLOAD="$FTPBENCH_WORK/bin/ftpload"
FIXTURE="$FTPBENCH_WORK/fixtures/blob-1048576.bin"
PORT=2130 PASV=30000-31999

WAVES=5 CLIENTS=200 BUILD=1 FERRY="$REPO/target/release/ferry"
while (($#)); do
  case "$1" in
    --waves) WAVES="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --ferry) FERRY="$(realpath "$2")"; BUILD=0; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "first_wave.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "first_wave.sh: $*" >&2; exit 1; }
[[ "$WAVES" =~ ^[1-9][0-9]*$ && "$CLIENTS" =~ ^[1-9][0-9]*$ ]] ||
  die "--waves and --clients take a positive number"
command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"
[[ -x "$FTPLOAD" && -f "$FIXTURE" ]] || die "$FTPLOAD or $FIXTURE missing: run bench/run.sh --setup once"
if ((BUILD)); then cargo build --release --manifest-path "$REPO/Cargo.toml" -p ferry >&2; fi
[[ -x "$FERRY" ]] || die "$FERRY missing (drop --no-build)"

RES="$HERE/results/$(date +%Y%m%d-%H%M%S)-first-wave"
WORK="$(mktemp -d /var/tmp/ferry-first-wave.XXXXXX)"
FERRY_PID=""
cleanup() {
  [[ -n "$FERRY_PID" ]] && kill "$FERRY_PID" 2>/dev/null && wait "$FERRY_PID" 2>/dev/null
  rm -rf -- "$WORK"
}
trap cleanup EXIT
mkdir -p "$RES"

ulimit -n "$(ulimit -Hn)"
echo bench | "$FERRY" user add bench --password-stdin --data-dir "$WORK/data" >/dev/null
ln "$FIXTURE" "$WORK/data/homes/bench/small1m.bin" 2>/dev/null ||
  cp "$FIXTURE" "$WORK/data/homes/bench/small1m.bin"
"$FERRY" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --passive-ports "$PASV" \
  --set limits.max_sessions_per_ip=20000 --set limits.max_sessions_per_user=20000 \
  --set limits.max_sessions=20000 >"$WORK/ferry.log" 2>&1 &
FERRY_PID=$!
for ((i = 0; i < 100; i++)); do grep -q "listening ftp" "$WORK/ferry.log" && break; sleep 0.1; done
grep -q "listening ftp" "$WORK/ferry.log" || die "ferry did not start (log: $WORK/ferry.log)"
"$FTPLOAD" login --port "$PORT" --count 50 >/dev/null

for ((k = 1; k <= WAVES; k++)); do
  perf record -q -a -e sched:sched_switch -o "$WORK/wave.data" -- \
    "$FTPLOAD" sessions --port "$PORT" --clients "$CLIENTS" --rounds 1 >"$WORK/wave.json" 2>/dev/null
  perf script -i "$WORK/wave.data" -F cpu,pid,time,trace 2>/dev/null >"$WORK/wave$k.txt"
  python3 - "$WORK/wave.json" "$WORK/wave$k.txt" "$FERRY_PID" "$k" <<'EOF' | tee -a "$RES/raw.tsv"
import collections, json, re, sys
out, trace, ferry, k = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
j = json.loads(open(out).read().strip().splitlines()[-1])
assert j["errors"] == 0, j
# sched_switch lines: "pid [cpu] secs: prev_comm=... prev_pid=... ==> next_comm=... next_pid=..."
pat = re.compile(r"^\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+prev_comm=(.*?) prev_pid=(\d+) .*"
                 r"next_comm=(.*?) next_pid=(\d+)")
events = []
for line in open(trace):
    m = pat.match(line)
    if m:
        events.append((round(float(m[3]) * 1e6), int(m[2]), m[1], m[4], m[6]))
events.sort()
# The wave: from the first time ftpload is switched in to the last time it is switched out.
runs = [e[0] for e in events if e[4].startswith("ftpload") or e[3].startswith("ftpload")]
start, end = min(runs), max(runs)
since = {}
spent = collections.Counter()
def who(pid, comm):
    if comm.startswith("swapper"): return "idle"
    if comm.startswith("ftpload"): return "client"
    if pid == ferry: return "ferry"
    return "other"
for t, cpu, pid, prev, nxt in events:
    if cpu in since:
        lo, hi = max(since[cpu], start), min(t, end)
        if hi > lo:
            spent[who(pid, prev)] += hi - lo
    since[cpu] = t
total = sum(spent.values()) or 1
wall = (end - start) / 1e3
cli_ms = (j["client_user_s"] + j["client_sys_s"]) * 1e3
print("\t".join(str(x) for x in (
    k, f"{wall:.1f}", f"{j['session_p50_ms']:.1f}", f"{j['session_p99_ms']:.1f}",
    f"{cli_ms / j['ok'] * 1e3:.0f}",
    *(f"{100 * spent[w] / total:.0f}" for w in ("client", "ferry", "idle", "other")))))
EOF
done

{ echo "ferry: ${FERRY#"$REPO"/} ($("$FERRY" --version)); repo at $(git -C "$REPO" rev-parse --short HEAD)"
  echo "$WAVES waves of $CLIENTS sessions started at once (ftpload sessions --rounds 1), after 50 logins"
  echo
  echo "| wave | traced ms | p50 ms | p99 ms | client CPU µs/session | client % | ferry % | idle % | other % |"
  echo "|---|---|---|---|---|---|---|---|---|"
  while IFS=$'\t' read -r k w p50 p99 cps c f i o; do
    echo "| $k | $w | $p50 | $p99 | $cps | $c | $f | $i | $o |"
  done <"$RES/raw.tsv"
  echo
  echo "client/ferry/idle/other %: shares of both CPUs' time while ftpload ran (100 % = 2 CPUs),"
  echo "from sched_switch; client CPU per session from ftpload's own rusage (includes its start-up)."
} | tee "$RES/table.md"
echo "results: ${RES#"$REPO"/}" >&2
