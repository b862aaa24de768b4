#!/usr/bin/env bash
# The small-files workload with CPU placement held fixed: Ferry and one peer (Pure-FTPd by
# default), each with its server pinned to CPU 0 and the client (the harness's ftpload) pinned
# either to CPU 1 ("cross") or to CPU 0 as well ("same"). Prints medians [min-max] and
# Ferry / peer ratios per placement.
#
#   bench/placement.sh [--runs N] [--count N] [--peer NAME] [--no-build] [--ferry BIN]...
#
# --ferry BIN: measure that ferry binary instead of building target/release/ferry; give it twice
# or more to compare builds in one invocation (each against the same peer runs).
#
# Why: on a small VM a sequential client's files/s depends on where the scheduler puts client and
# server. Across CPUs every reply wakes the other CPU (an IPI and a halted vCPU to resume, ~15 us
# here); on one CPU a reply costs a context switch, so the server's own CPU work per file decides.
# bench/run.sh leaves placement to the scheduler; this shows both cases apart (bench/README.md).
# Needs root (the harness's peers), 2+ CPUs, taskset, and the harness set up (bench/run.sh --setup).
# Writes bench/results/<timestamp>-placement/; the uploaded files live in a temp dir removed at
# exit. On an ext4 without a journal, creating files is slower for some minutes after many were
# deleted (bench/README.md, Caveats): compare builds in one invocation, not in two in a row.
set -euo pipefail

# shellcheck source=bench/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"
FTPLOAD="$FTPBENCH_WORK/bin/ftpload"
FERRYS=()
FERRY_PORT=2130 PEER_PORT=2131 PASV=30000-31999

RUNS=3 COUNT=2000 PEER=pure-ftpd BUILD=1
while (($#)); do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --count) COUNT="$2"; shift 2 ;;
    --peer) PEER="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --ferry) FERRYS+=("$(realpath "$2")"); BUILD=0; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
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
((${#FERRYS[@]})) || FERRYS=("$REPO/target/release/ferry")
for f in "${FERRYS[@]}"; do [[ -x "$f" ]] || die "$f missing (drop --no-build)"; done
# Column names: "ferry", or with several builds "ferry:<file name>".
label() { if ((${#FERRYS[@]} == 1)); then echo ferry; else echo "ferry:${1##*/}"; fi; }

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

ferry_run() { # BIN CLIENT_CPU: that Ferry on CPU 0, fresh data dir
  local bin="$1" data="$WORK/ferry-$RANDOM$RANDOM" i
  echo bench | "$bin" user add bench --password-stdin --data-dir "$data" >/dev/null
  taskset -c 0 "$bin" serve --data-dir "$data" --listen "127.0.0.1:$FERRY_PORT" \
    --passive-ports "$PASV" >"$data.log" 2>&1 &
  FERRY_PID=$!
  for ((i = 0; i < 100; i++)); do grep -q "listening ftp" "$data.log" && break; sleep 0.1; done
  grep -q "listening ftp" "$data.log" || die "ferry did not start (log: $data.log)"
  load "$2" "$FERRY_PORT"
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
    for f in "${FERRYS[@]}"; do
      ferry_run "$f" "$cpu" >"$WORK/out"
      read -r up down cl <"$WORK/out"
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$placement" "$(label "$f")" "$up" "$down" "$cl" |
        tee -a "$RAW" >&2
    done
    peer_run "$cpu" >"$WORK/out"
    read -r up down cl <"$WORK/out"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$placement" "$PEER" "$up" "$down" "$cl" | tee -a "$RAW" >&2
  done
done

{ for f in "${FERRYS[@]}"; do echo "$(label "$f"): ${f#"$REPO"/} ($("$f" --version))"; done
  echo "repo at $(git -C "$REPO" rev-parse --short HEAD)"; echo
python3 - "$RAW" "$PEER" "$COUNT" <<'EOF'
import csv, statistics, sys
raw, peer, count = sys.argv[1:4]
rows = list(csv.DictReader(open(raw), delimiter="\t"))
ferrys = list(dict.fromkeys(r["server"] for r in rows if r["server"] != peer))
def cell(placement, server, key):
    v = [float(r[key]) for r in rows if r["placement"] == placement and r["server"] == server]
    return statistics.median(v), min(v), max(v)
runs = len({r["run"] for r in rows})
print(f"Small files ({count} x 4 KiB, one session), server pinned to CPU 0, client on CPU 1 (cross) "
      f"or CPU 0 (same); medians [min-max] of {runs} runs\n")
print("| placement | direction | " + " | ".join(f"{f} files/s" for f in ferrys)
      + f" | {peer} files/s | " + " | ".join(f"{f} / {peer}" for f in ferrys) + " |")
print("|---|---|" + "---|" * (2 * len(ferrys) + 1))
fmt = lambda c: f"{c[0]:,.0f} [{c[1]:,.0f}-{c[2]:,.0f}]"
for placement in ("cross", "same"):
    for key, name in (("up_per_s", "up"), ("down_per_s", "down")):
        p = cell(placement, peer, key)
        fs = [cell(placement, f, key) for f in ferrys]
        print(f"| {placement} | {name} | " + " | ".join(fmt(c) for c in fs) + f" | {fmt(p)} | "
              + " | ".join(f"{c[0] / p[0]:.2f}x" for c in fs) + " |")
EOF
} | tee "$RES/table.md"
echo "results: ${RES#"$REPO"/}" >&2
