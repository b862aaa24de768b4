#!/usr/bin/env bash
# The small-files workload with CPU placement held fixed: Ferry and one peer (Pure-FTPd by
# default), each with its server pinned to CPU 0 and the client (the harness's ftpload) pinned
# either to CPU 1 ("cross") or to CPU 0 as well ("same"). Prints medians [min-max] and
# Ferry / peer ratios per placement.
#
#   bench/placement.sh [--runs N] [--count N] [--peer NAME] [--no-build] [--ferry BIN]
#
# --ferry BIN: measure that ferry binary instead of building target/release/ferry (A/B of builds).
# Why: on a small VM a sequential client's files/s depends on where the scheduler puts client and
# server. Across CPUs every reply wakes the other CPU (an IPI and a halted vCPU to resume, ~15 us
# here); on one CPU a reply costs a context switch, so the server's own CPU work per file decides.
# bench/run.sh leaves placement to the scheduler; this shows both cases apart (bench/README.md).
# Needs root (the harness's peers), 2+ CPUs, taskset, and the harness set up (bench/run.sh --setup).
# Writes bench/results/<timestamp>-placement/; everything else lives in a temp dir removed at exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
if [[ -n "${FTPBENCH_HARNESS:-}" ]]; then
  HARNESS="$FTPBENCH_HARNESS"
elif [[ -f "$REPO/../shared/bench/bench.py" ]]; then
  HARNESS="$(cd "$REPO/../shared/bench" && pwd)"
else
  HARNESS=/work/shared/bench
fi
export FTPBENCH_WORK="${FTPBENCH_WORK:-/var/tmp/ftpbench}"
export PYTHONDONTWRITEBYTECODE=1
FTPLOAD="$FTPBENCH_WORK/bin/ftpload"
FERRY="$REPO/target/release/ferry"
FERRY_PORT=2130 PEER_PORT=2131 PASV=30000-31999

RUNS=3 COUNT=2000 PEER=pure-ftpd BUILD=1
while (($#)); do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --count) COUNT="$2"; shift 2 ;;
    --peer) PEER="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --ferry) FERRY="$(realpath "$2")"; BUILD=0; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "placement.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "placement.sh: $*" >&2; exit 1; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$COUNT" =~ ^[1-9][0-9]*$ ]] || die "--runs and --count take a positive number"
(($(nproc) >= 2)) || die "needs at least 2 CPUs (has $(nproc))"
command -v taskset >/dev/null || die "taskset missing (apt-get install util-linux)"
[[ -x "$FTPLOAD" ]] || die "$FTPLOAD missing: run bench/run.sh --setup once"
python3 "$HARNESS/peer.py" list | grep -E "^$PEER +port " | grep -qv "NOT installed" ||
  die "peer $PEER is not installed (bench/run.sh --setup)"
if ((BUILD)); then cargo build --release --manifest-path "$REPO/Cargo.toml" -p ferry >&2; fi
[[ -x "$FERRY" ]] || die "$FERRY missing (drop --no-build)"
echo "ferry: $FERRY ($("$FERRY" --version 2>/dev/null || true))" >&2

RES="$HERE/results/$(date +%Y%m%d-%H%M%S)-placement"
WORK="$(mktemp -d /var/tmp/ferry-placement.XXXXXX)"
FERRY_PID=""
cleanup() {
  [[ -n "$FERRY_PID" ]] && kill "$FERRY_PID" 2>/dev/null && wait "$FERRY_PID" 2>/dev/null
  python3 "$HARNESS/peer.py" stop "$PEER" >/dev/null 2>&1 || true
  rm -rf -- "$WORK"
}
trap cleanup EXIT
mkdir -p "$RES"
RAW="$RES/raw.tsv"
printf 'run\tplacement\tserver\tup_per_s\tdown_per_s\tclient_cpu_pct\n' >"$RAW"

# One ftpload run on CPU $1 against port $2; prints "up down client%". The files stay (a fresh
# directory per run): deleting them would make the next run's creates skip ext4's recently
# deleted inodes, which slows whichever server comes next.
load() {
  taskset -c "$1" "$FTPLOAD" smallfiles --port "$2" --count "$COUNT" --dir sf --no-cleanup |
    python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); assert j["errors"]==0, j
print("%.0f %.0f %.1f" % (j["upload_files_per_s"], j["download_files_per_s"], j["client_cpu_pct_of_one_core"]))'
}

ferry_run() { # CLIENT_CPU: Ferry on CPU 0, fresh data dir
  local data="$WORK/ferry-$RANDOM$RANDOM" i
  echo bench | "$FERRY" user add bench --password-stdin --data-dir "$data" >/dev/null
  taskset -c 0 "$FERRY" serve --data-dir "$data" --listen "127.0.0.1:$FERRY_PORT" \
    --passive-ports "$PASV" >"$data.log" 2>&1 &
  FERRY_PID=$!
  for ((i = 0; i < 100; i++)); do grep -q "listening ftp" "$data.log" && break; sleep 0.1; done
  grep -q "listening ftp" "$data.log" || die "ferry did not start (log: $data.log)"
  load "$1" "$FERRY_PORT"
  kill "$FERRY_PID"; wait "$FERRY_PID" 2>/dev/null || true; FERRY_PID=""
}

peer_run() { # CLIENT_CPU: the peer (all its processes, and so the sessions it forks) on CPU 0
  local data="$WORK/$PEER-$RANDOM$RANDOM" p
  mkdir -p "$data" && chmod 777 "$data"
  python3 "$HARNESS/peer.py" start "$PEER" --port "$PEER_PORT" --data "$data" >/dev/null
  sleep 0.5
  for p in $(python3 "$HARNESS/peer.py" pids "$PEER"); do taskset -a -p -c 0 "$p" >/dev/null; done
  load "$1" "$PEER_PORT"
  python3 "$HARNESS/peer.py" stop "$PEER" >/dev/null
}

for ((k = 1; k <= RUNS; k++)); do
  for placement in cross same; do
    cpu=1; [[ $placement == same ]] && cpu=0
    ferry_run "$cpu" >"$WORK/out"
    read -r up down cl <"$WORK/out"
    printf '%s\t%s\tferry\t%s\t%s\t%s\n' "$k" "$placement" "$up" "$down" "$cl" | tee -a "$RAW" >&2
    peer_run "$cpu" >"$WORK/out"
    read -r up down cl <"$WORK/out"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$placement" "$PEER" "$up" "$down" "$cl" | tee -a "$RAW" >&2
  done
done

{ echo "ferry: ${FERRY#"$REPO"/} (repo at $(git -C "$REPO" rev-parse --short HEAD))"; echo
python3 - "$RAW" "$PEER" "$COUNT" <<'EOF'
import csv, statistics, sys
raw, peer, count = sys.argv[1:4]
rows = list(csv.DictReader(open(raw), delimiter="\t"))
def cell(placement, server, key):
    v = [float(r[key]) for r in rows if r["placement"] == placement and r["server"] == server]
    return statistics.median(v), min(v), max(v)
print(f"Small files ({count} x 4 KiB, one session), server pinned to CPU 0, client on CPU 1 (cross) "
      f"or CPU 0 (same); medians [min-max] of {len(rows) // 4} runs\n")
print(f"| placement | direction | Ferry files/s | {peer} files/s | Ferry / {peer} |")
print("|---|---|---|---|---|")
for placement in ("cross", "same"):
    for key, name in (("up_per_s", "up"), ("down_per_s", "down")):
        f, p = cell(placement, "ferry", key), cell(placement, peer, key)
        print(f"| {placement} | {name} | {f[0]:,.0f} [{f[1]:,.0f}-{f[2]:,.0f}] | "
              f"{p[0]:,.0f} [{p[1]:,.0f}-{p[2]:,.0f}] | {f[0] / p[0]:.2f}x |")
EOF
} | tee "$RES/table.md"
echo "results: ${RES#"$REPO"/}" >&2
