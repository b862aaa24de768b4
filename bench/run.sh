#!/usr/bin/env bash
# Ferry's project benchmark: builds Ferry (release), runs the shared FTP benchmark harness
# (shared/bench: bench.py, ftpload, curl) against Ferry and against peer servers (vsftpd,
# pyftpdlib) in one invocation with the same options, and prints one side-by-side table.
# With --tls also the harness's FTPS workloads plus our own FTPS upload (tls_stor.py).
#
#   bench/run.sh [--quick] [--runs N] [--workloads LIST] [--big-size SIZE] [--idle LIST]
#                [--peers LIST] [--tls] [--setup] [--no-build] [-- BENCH_PY_ARGS...]
#
# See bench/README.md. Needs root (the harness's setup.sh, peers, cgroups).
# Writes only bench/results/<timestamp>/ in the repo; Ferry's data dir is a temp dir under
# /var/tmp, removed at the end. Ferry and the peers are stopped on exit, error or Ctrl-C.
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
export PYTHONDONTWRITEBYTECODE=1 # the harness folder is read-only: no __pycache__ there
W="$FTPBENCH_WORK"

PORT=2130
PASV=30000-31999
FERRY="$REPO/target/release/ferry"
# Only the session caps are raised (defaults 500 per IP / 500 per user / 10000 total): all load
# comes from 127.0.0.1 as one user. Every peer had its caps raised likewise.
FERRY_SETS=(--set limits.max_sessions_per_ip=20000 --set limits.max_sessions_per_user=20000
            --set limits.max_sessions=20000)
# Optional extra `ferry serve` arguments for the FTPS workloads (env var, empty by default).
# None are needed: Ferry offers explicit FTPS (AUTH TLS) on loopback with a self-signed
# certificate it generates in its data dir.
read -r -a FERRY_TLS_ARGS <<<"${FERRY_TLS_ARGS:-}"

usage() {
  cat <<EOF
usage: bench/run.sh [options] [-- extra bench.py options]

  --quick            smoke mode (~30 s plus the build): 64 MiB transfers x1, 100 logins, 20 clients x 3 rounds,
                     200 small files, idle 200; 1 run
  --runs N           runs (each: Ferry on a fresh data dir, then the peers); default 1
  --workloads LIST   retr,stor,login,sessions,smallfiles,idle (bench.py), tls_retr,tls_sessions
                     (bench.py), tls_stor (bench/tls_stor.py); default
                     retr,stor,login,sessions,smallfiles,idle
  --big-size SIZE    size of the single-stream RETR/STOR file (default 1GiB; --quick 64MiB)
  --idle LIST        idle connection counts (default 1000,5000; --quick 200); Ferry is
                     restarted fresh before each
  --peers LIST       peers to compare with (default vsftpd,pyftpdlib; see peer.py list)
  --tls              also run the FTPS workloads tls_retr, tls_sessions and tls_stor (FTPS
                     upload); Ferry gets \$FERRY_TLS_ARGS if set (none needed)
  --setup            run the harness's setup.sh even if everything looks installed
  --no-build         use the existing target/release/ferry
  -- ARGS            passed to every bench.py invocation (e.g. -- --clients 50 --repeats 5)
EOF
}

QUICK=0 RUNS="" WORKLOADS="retr,stor,login,sessions,smallfiles,idle" BIG="" IDLE="" TLS=0
PEERS="vsftpd,pyftpdlib" FORCE_SETUP=0 BUILD=1 EXTRA=()
ARGV_ORIG=("$@")
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --big-size) BIG="$2"; shift ;;
    --idle) IDLE="$2"; shift ;;
    --peers) PEERS="$2"; shift ;;
    --tls) TLS=1 ;;
    --setup) FORCE_SETUP=1 ;;
    --no-build) BUILD=0 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (the harness's setup.sh, peers and cgroups need it)"
[[ -f "$HARNESS/bench.py" ]] || die "shared harness not found at $HARNESS (set FTPBENCH_HARNESS)"
command -v python3 >/dev/null || die "python3 missing"

# ---------------------------------------------------------------- parameters
COMMON=()
if ((QUICK)); then
  RUNS="${RUNS:-1}"; BIG="${BIG:-64MiB}"; IDLE="${IDLE:-200}"
  COMMON+=(--repeats 1 --login-count 100 --clients 20 --rounds 3 --small-count 200
           --small-max-seconds 10 --max-seconds 60)
else
  RUNS="${RUNS:-1}"; BIG="${BIG:-1GiB}"; IDLE="${IDLE:-1000,5000}"
fi
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
COMMON+=(--big-size "$BIG" "${EXTRA[@]}")

MAIN_W=() DO_IDLE=0 DO_TLS_STOR=0 BENCH_W=()
IFS=',' read -r -a _ws <<<"$WORKLOADS"
for w in "${_ws[@]}"; do
  w="${w// /}"
  case "$w" in
    "") ;;
    idle) DO_IDLE=1; BENCH_W+=("$w") ;;
    tls_stor) DO_TLS_STOR=1 ;;
    retr|stor|login|sessions|smallfiles|tls_retr|tls_sessions) MAIN_W+=("$w"); BENCH_W+=("$w") ;;
    *) die "unknown workload $w" ;;
  esac
done
MAIN_LIST="$(IFS=,; echo "${MAIN_W[*]:-}")"
BENCH_LIST="$(IFS=,; echo "${BENCH_W[*]:-}")" # what the peers' bench.py runs (tls_stor is ours)
IFS=',' read -r -a IDLE_NS <<<"$IDLE"
IFS=',' read -r -a PEER_LIST <<<"$PEERS"
TLS_OPT=() FERRY_EXTRA=()
if ((TLS)); then TLS_OPT=(--tls); DO_TLS_STOR=1; fi # bench.py --tls adds tls_retr,tls_sessions
if ((TLS || DO_TLS_STOR)) || [[ "$MAIN_LIST" == *tls_* ]]; then FERRY_EXTRA=("${FERRY_TLS_ARGS[@]}"); fi

# ---------------------------------------------------------------- state + cleanup
TS="$(date +%Y%m%d-%H%M%S)$( ((QUICK)) && echo -quick || true)"
RES="$HERE/results/$TS"
WORKDIR=""
FERRY_PID=""
BENCH_PID=""
PEERS_ACTIVE=0
T0=$SECONDS

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

stop_ferry() {
  [[ -n "$FERRY_PID" ]] || return 0
  local pid=$FERRY_PID i
  FERRY_PID=""
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "warning: ferry (pid $pid) still running 30 s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    elif ((i > 20)); then
      log "note: ferry took $((i / 10)).$((i % 10)) s to exit after SIGTERM"
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

stop_bench() {
  [[ -n "$BENCH_PID" ]] || return 0
  local pid=$BENCH_PID i
  BENCH_PID=""
  if alive "$pid"; then
    # bench.py runs in its own process group (job control): SIGINT there ends bench.py
    # (its finally-blocks stop the peer it started) and its curl/ftpload children
    kill -INT -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -TERM -- "-$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_bench
  stop_ferry
  if ((PEERS_ACTIVE)); then
    for p in "${PEER_LIST[@]}"; do python3 "$HARNESS/peer.py" stop "$p" >/dev/null 2>&1 || true; done
  fi
  [[ -n "$WORKDIR" && -d "$WORKDIR" ]] && rm -rf -- "$WORKDIR"
  if ((rc != 0)); then
    log "failed (exit $rc) after $((SECONDS - T0)) s$([[ -d "$RES" ]] && echo "; partial results in ${RES#"$REPO"/}")"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run bench.py in the background in its own process group, so that a signal to this script
# runs the trap at once (a foreground child would delay it until it ended)
run_bench() { # OUT_DIR bench.py-args...
  run_py "$HARNESS/bench.py" "$@"
}
run_py() { # SCRIPT OUT_DIR args...
  local script="$1" out="$2"; shift 2
  mkdir -p "$out"
  local rc=0
  set -m
  # --default-signal: a SIGINT ignored by whoever started us (e.g. a background job) would
  # otherwise be inherited, and bench.py could not be interrupted cleanly
  env --default-signal=INT python3 "$script" --out "$out" "$@" >"$out/stdout.md" \
    2> >(tee -a "$RES/bench.log" >&2) &
  BENCH_PID=$!
  set +m
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  if ((rc != 0)); then log "warning: ${script##*/} exited with $rc (see $out)"; fi
  return 0
}

start_ferry() { # LABEL
  local label="$1" i
  local out="$WORKDIR/ferry-$label.stdout" errlog="$RES/raw/ferry-$label.log"
  local want="listening ftp 127.0.0.1:$PORT"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$PORT"
  fi
  set -m
  (
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # as the harness does for the peers
    exec "$FERRY" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" --passive-ports "$PASV" \
      "${FERRY_SETS[@]}" "${FERRY_EXTRA[@]}"
  ) >"$out" 2>"$errlog" &
  FERRY_PID=$!
  set +m
  for ((i = 0; i < 600; i++)); do
    grep -qF "$want" "$out" 2>/dev/null && break
    if ! alive "$FERRY_PID"; then
      tail -n 20 "$errlog" >&2 || true
      die "ferry exited before listening (log: $errlog)"
    fi
    sleep 0.1
  done
  grep -qF "$want" "$out" || die "ferry did not print '$want' within 60 s (log: $errlog)"
  log "ferry started ($label): pid $FERRY_PID, log ${errlog#"$REPO"/}"
}

# ---------------------------------------------------------------- setup + build
need_setup=$FORCE_SETUP
[[ -x "$W/bin/ftpload" ]] || need_setup=1
id bench >/dev/null 2>&1 || need_setup=1
KNOWN_PEERS=",$(python3 "$HARNESS/peer.py" list | awk '{print $1}' | paste -sd,),"
for p in "${PEER_LIST[@]}"; do
  [[ "$KNOWN_PEERS" == *",$p,"* ]] || die "unknown peer $p (known: ${KNOWN_PEERS:1:-1})"
done
peer_installed() { python3 "$HARNESS/peer.py" list 2>/dev/null | grep -E "^$1 +port " | grep -qv "NOT installed"; }
for p in "${PEER_LIST[@]}"; do peer_installed "$p" || need_setup=1; done
if ((need_setup)); then
  skip_unftp=1
  [[ ",$PEERS," == *",unftp,"* ]] && skip_unftp=0
  log "running $HARNESS/setup.sh (SKIP_UNFTP=${SKIP_UNFTP:-$skip_unftp})"
  SKIP_UNFTP="${SKIP_UNFTP:-$skip_unftp}" bash "$HARNESS/setup.sh"
fi
for p in "${PEER_LIST[@]}"; do
  peer_installed "$p" || die "peer $p is not installed (setup.sh failed for it?)"
done

if ((BUILD)); then
  log "cargo build --release -p ferry"
  (cd "$REPO" && cargo build --release -p ferry)
fi
[[ -x "$FERRY" ]] || die "$FERRY missing (build failed or --no-build)"

mkdir -p "$RES/raw"
WORKDIR="$(mktemp -d /var/tmp/ferry-bench.XXXXXX)"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]] && COMMIT="$COMMIT+dirty"
FERRY_VERSION="$("$FERRY" --version 2>/dev/null || echo ferry)"
{
  echo "command: bench/run.sh ${ARGV_ORIG[*]}"
  echo "date: $(date -Is)"
  echo "ferry: $FERRY_VERSION, commit $COMMIT"
  echo "harness: $HARNESS"
  echo "peers: $PEERS"
  echo "runs: $RUNS; workloads: $WORKLOADS; idle: $IDLE; tls: $TLS; tls_stor: $DO_TLS_STOR"
  echo "bench.py options: ${COMMON[*]}"
  echo "ferry serve: --listen 127.0.0.1:$PORT --passive-ports $PASV ${FERRY_SETS[*]} ${FERRY_EXTRA[*]:-}"
} >"$RES/run.txt"
log "results -> ${RES#"$REPO"/}"

# ---------------------------------------------------------------- runs
for ((k = 1; k <= RUNS; k++)); do
  log "==== run $k/$RUNS: ferry"
  DATA="$WORKDIR/data-run$k"
  echo bench | "$FERRY" user add bench --password-stdin --data-dir "$DATA" >/dev/null
  HOME_DIR="$DATA/homes/bench"
  [[ -d "$HOME_DIR" ]] || die "ferry user add did not create $HOME_DIR"
  FERRY_DIRS=()
  target_args=(--target "127.0.0.1:$PORT" --name ferry --user bench --password bench --data-dir "$HOME_DIR")
  if [[ -n "$MAIN_LIST" ]] || ((TLS)); then
    start_ferry "run$k-main"
    run_bench "$RES/raw/run$k-ferry-main" "${target_args[@]}" --server-pid "$FERRY_PID" \
      --workloads "$MAIN_LIST" "${TLS_OPT[@]}" "${COMMON[@]}"
    stop_ferry
    FERRY_DIRS+=("$RES/raw/run$k-ferry-main")
  fi
  if ((DO_IDLE)); then
    for n in "${IDLE_NS[@]}"; do
      # a fresh process per size: heap grown by earlier workloads would hide the per-connection cost
      start_ferry "run$k-idle$n"
      run_bench "$RES/raw/run$k-ferry-idle$n" "${target_args[@]}" --server-pid "$FERRY_PID" \
        --workloads idle --idle "$n" "${COMMON[@]}"
      stop_ferry
      FERRY_DIRS+=("$RES/raw/run$k-ferry-idle$n")
    done
  fi
  if ((DO_TLS_STOR)); then
    # FTPS upload (bench/tls_stor.py: the harness's stor with curl --ssl-reqd), on a fresh
    # process as for the peers, which tls_stor.py starts fresh with --tls
    start_ferry "run$k-tls_stor"
    run_py "$HERE/tls_stor.py" "$RES/raw/run$k-ferry-tls_stor" "${target_args[@]}" \
      --server-pid "$FERRY_PID" "${COMMON[@]}"
    stop_ferry
    FERRY_DIRS+=("$RES/raw/run$k-ferry-tls_stor")
  fi
  rm -rf -- "$DATA"
  if ((${#FERRY_DIRS[@]})); then
    python3 "$HERE/collect.py" "$RES" "$k" "${FERRY_DIRS[@]}" \
      --meta "version=$FERRY_VERSION" --meta "commit=$COMMIT" >/dev/null
  fi

  log "==== run $k/$RUNS: peers $PEERS"
  peer_args=()
  for p in "${PEER_LIST[@]}"; do peer_args+=(--peer "$p"); done
  PEERS_ACTIVE=1
  PEER_DIRS=()
  if [[ -n "$BENCH_LIST" ]] || ((TLS)); then
    run_bench "$RES/raw/run$k-peers" "${peer_args[@]}" --workloads "$BENCH_LIST" --idle "$IDLE" \
      "${TLS_OPT[@]}" "${COMMON[@]}"
    PEER_DIRS+=("$RES/raw/run$k-peers")
  fi
  if ((DO_TLS_STOR)); then
    run_py "$HERE/tls_stor.py" "$RES/raw/run$k-peers-tls_stor" "${peer_args[@]}" "${COMMON[@]}"
    PEER_DIRS+=("$RES/raw/run$k-peers-tls_stor")
  fi
  PEERS_ACTIVE=0
  if ((${#PEER_DIRS[@]})); then python3 "$HERE/collect.py" "$RES" "$k" "${PEER_DIRS[@]}" >/dev/null; fi
done

# ---------------------------------------------------------------- table
FTPBENCH_HARNESS="$HARNESS" python3 "$HERE/table.py" "$RES" --order "ferry,$PEERS" >"$RES/table.md"
for f in "$RES"/raw/*.log "$RES/bench.log"; do
  if [[ -f "$f" ]] && (($(stat -c %s "$f") > 1048576)); then gzip -9 "$f"; fi
done
{
  echo
  echo "Ferry $FERRY_VERSION ($COMMIT) vs $PEERS, $RUNS run(s)$( ((QUICK)) && echo ', --quick (smoke sizes: not comparable with full runs)' || true)."
  echo "Cells: median [min-max] over runs. CPU % of one core (200 % = both cores)."
  echo
  cat "$RES/table.md"
  echo
} 
log "done in $((SECONDS - T0)) s: ${RES#"$REPO"/}/table.md (raw JSON beside it, logs in raw/)"
