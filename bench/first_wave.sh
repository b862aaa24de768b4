#!/usr/bin/env bash
# Where the sessions workload's first wave spends its time: a fresh Ferry, 50 logins (the
# harness's login workload runs before sessions, so the credential cache is warm), then waves of
# the harness's sessions workload with one round each (C clients start at once: connect, login,
# TYPE I, LIST, RETR 1 MiB, QUIT). Prints, per wave, its wall time and p50/p99, and how the
# CPUs spent it: the client's CPU (ftpload), Ferry's, idle, and the rest.
#
#   bench/first_wave.sh [--waves N] [--clients C] [--no-build] [--ferry BIN]
#
# Why: the session p99 of bench/run.sh (2,000 sessions, 200 at a time) is the first wave, whose
# 200 sessions start together and end together. Later waves overlap with each other; the first
# one shows what 200 simultaneous sessions cost the client and the server (bench/README.md).
# Needs the harness set up (bench/run.sh --setup, as root). Writes
# bench/results/<timestamp>-first-wave/.
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

# CPU time of Ferry's threads (ns, exact) and both CPUs' idle time (USER_HZ ticks, 10 ms).
ferry_ns() { cat "/proc/$FERRY_PID/task/"*/schedstat | awk '{s += $1} END {printf "%d", s}'; }
idle_ticks() { awk '/^cpu /{print $5 + $6}' /proc/stat; }
for ((k = 1; k <= WAVES; k++)); do
  f0=$(ferry_ns) i0=$(idle_ticks)
  "$FTPLOAD" sessions --port "$PORT" --clients "$CLIENTS" --rounds 1 >"$WORK/wave.json" 2>/dev/null
  f1=$(ferry_ns) i1=$(idle_ticks)
  python3 - "$WORK/wave.json" "$k" "$f0" "$f1" "$i0" "$i1" "$(getconf CLK_TCK)" "$(nproc)" <<'EOF' |
import json, sys
out, k = sys.argv[1], sys.argv[2]
f0, f1, i0, i1, hz, cpus = map(int, sys.argv[3:])
j = json.loads(open(out).read().strip().splitlines()[-1])
assert j["errors"] == 0, j
n, wall = j["ok"], j["wall_s"] * 1e3
client = (j["client_user_s"] + j["client_sys_s"]) * 1e3
ferry, idle = (f1 - f0) / 1e6, (i1 - i0) * 1e3 / hz
other = max(cpus * wall - client - ferry - idle, 0.0)
print("\t".join([k] + [f"{v:.1f}" for v in (wall, j["session_p50_ms"], j["session_p99_ms"])]
                + [f"{v:.0f}" for v in (client, client * 1e3 / n, ferry, ferry * 1e3 / n, idle, other)]))
EOF
    tee -a "$RES/raw.tsv"
done

{ echo "ferry: ${FERRY#"$REPO"/} ($("$FERRY" --version)); repo at $(git -C "$REPO" rev-parse --short HEAD)"
  echo "$WAVES waves of $CLIENTS sessions started at once (ftpload sessions --rounds 1) after 50 logins;"
  echo "$(nproc) CPUs: a wave has $(nproc) × its wall time of CPU"
  echo
  echo "| wave | wall ms | p50 ms | p99 ms | client CPU ms | µs/session | Ferry CPU ms | µs/session | idle ms | other ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  while IFS=$'\t' read -r k w p50 p99 c cs f fs i o; do
    echo "| $k | $w | $p50 | $p99 | $c | $cs | $f | $fs | $i | $o |"
  done <"$RES/raw.tsv"
  echo
  echo "client: ftpload's own rusage (its start-up included); Ferry: its threads' schedstat; idle:"
  echo "/proc/stat, in 10 ms ticks; other: the rest of the CPUs' time (kernel threads, softirqs"
  echo "run outside either program, other programs)."
} | tee "$RES/table.md"
echo "results: ${RES#"$REPO"/}" >&2
