#!/usr/bin/env bash
# Ferry's project benchmark: builds Ferry (release), runs the shared FTP benchmark harness
# (shared/bench: bench.py, ftpload, curl) against Ferry and against the peer servers (all five by
# default) in one invocation with the same options, plus our FTPS upload (tls_stor.py), a STOR
# phase on a Ferry without upload digests, and the chat idle-memory benchmark (chat_idle.py:
# Ferry, ngIRCd, InspIRCd); prints one side-by-side table with Ferry / best peer ratios and the
# issue's targets.
#
#   bench/run.sh [--quick] [--runs N] [--workloads LIST] [--no-tls] [--big-size SIZE]
#                [--idle LIST] [--chat-clients N] [--peers LIST] [--setup] [--no-build]
#                [-- BENCH_PY_ARGS...]
#
# See bench/README.md. Needs root (the harness's setup.sh, peers, cgroups).
# Writes only bench/results/<timestamp>/ in the repo; Ferry's data dir is a temp dir under
# /var/tmp, removed at the end. Ferry and the peers are stopped on exit, error or Ctrl-C.
set -euo pipefail

# shellcheck source=bench/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"
W="$FTPBENCH_WORK"

PORT=2130
PASV=30000-31999
FERRY="$REPO/target/release/ferry"
# Only the session caps are raised (defaults 500 per IP / 500 per user / 10000 total): all load
# comes from 127.0.0.1 as one user. Every peer had its caps raised likewise.
FERRY_SETS=(--set limits.max_sessions_per_ip=20000 --set limits.max_sessions_per_user=20000
            --set limits.max_sessions=20000)
# The stor_nohash phase: the one switch that differs from Ferry's defaults (SHA-256 of uploads).
NOHASH_SETS=(--set ftp.hash_uploads=false)
# Optional extra `ferry serve` arguments for the FTPS phases (env var, empty by default).
# None are needed: Ferry offers explicit FTPS (AUTH TLS) on loopback with a self-signed
# certificate it generates in its data dir.
read -r -a FERRY_TLS_ARGS <<<"${FERRY_TLS_ARGS:-}"

ALL_PEERS="vsftpd,pure-ftpd,proftpd,pyftpdlib,unftp"
ALL_WORKLOADS="retr,stor,stor_nohash,login,sessions,smallfiles,idle,tls_retr,tls_sessions,tls_stor,chat_idle"

usage() {
  cat <<EOF
usage: bench/run.sh [options] [-- extra bench.py options]

  --quick            smoke test: 64 MiB transfers x1, 100 logins, 20 clients x 3 rounds,
                     200 small files, idle 200, 200 chat clients; 1 run
  --runs N           runs, each: Ferry (fresh data dir), then the peers, then chat_idle.py;
                     cells are medians over runs; default 3 (--quick: 1)
  --workloads LIST   default: all of
                       $ALL_WORKLOADS
                     retr,stor,login,sessions,smallfiles,idle,tls_retr,tls_sessions: the harness's
                     (bench.py); stor_nohash: the harness's stor on a Ferry started with
                     --set ftp.hash_uploads=false (the peers' cells: their stor); tls_stor: FTPS
                     upload (bench/tls_stor.py); chat_idle: bench/chat_idle.py (Ferry, ngIRCd,
                     InspIRCd)
  --no-tls           leave out the FTPS workloads (tls_retr,tls_sessions,tls_stor)
  --tls              add the FTPS workloads to a --workloads list (they are in the default)
  --big-size SIZE    size of the single-stream RETR/STOR file (default 1GiB; --quick 64MiB)
  --idle LIST        idle connection counts (default 1000,10000; --quick 200); every server
                     is restarted fresh before each
  --chat-clients N   idle chat clients of chat_idle.py (default 1000; --quick 200)
  --peers LIST       peers to compare with (default $ALL_PEERS)
  --setup            run the harness's setup.sh even if everything looks installed
  --no-build         use the existing target/release/ferry
  -- ARGS            passed to every bench.py and tls_stor.py invocation (e.g. -- --clients 50 --repeats 5)
EOF
}

QUICK=0 RUNS="" WORKLOADS="$ALL_WORKLOADS" BIG="" IDLE="" CHAT_N="" TLS=0 NO_TLS=0
PEERS="$ALL_PEERS" FORCE_SETUP=0 BUILD=1 EXTRA=()
ARGV_ORIG=("$@")
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --big-size) BIG="$2"; shift ;;
    --idle) IDLE="$2"; shift ;;
    --chat-clients) CHAT_N="$2"; shift ;;
    --peers) PEERS="$2"; shift ;;
    --tls) TLS=1 ;;
    --no-tls) NO_TLS=1 ;;
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
((TLS && NO_TLS)) && die "--tls and --no-tls contradict each other"

# ---------------------------------------------------------------- parameters
COMMON=()
if ((QUICK)); then
  RUNS="${RUNS:-1}"; BIG="${BIG:-64MiB}"; IDLE="${IDLE:-200}"; CHAT_N="${CHAT_N:-200}"
  COMMON+=(--repeats 1 --login-count 100 --clients 20 --rounds 3 --small-count 200
           --small-max-seconds 10 --max-seconds 60)
else
  RUNS="${RUNS:-3}"; BIG="${BIG:-1GiB}"; IDLE="${IDLE:-1000,10000}"; CHAT_N="${CHAT_N:-1000}"
fi
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
[[ "$CHAT_N" =~ ^[1-9][0-9]*$ ]] || die "--chat-clients wants a positive number"
COMMON+=(--big-size "$BIG" "${EXTRA[@]}")

if ((TLS)); then WORKLOADS="$WORKLOADS,tls_retr,tls_sessions,tls_stor"; fi
RUN_W=() MAIN_W=() TLS_W=() PEER_W=() DO_NOHASH=0 DO_IDLE=0 DO_TLS_STOR=0 DO_CHAT=0 SEEN=","
IFS=',' read -r -a _ws <<<"$WORKLOADS"
for w in "${_ws[@]}"; do
  w="${w// /}"
  [[ -z "$w" || "$SEEN" == *",$w,"* ]] && continue
  SEEN="$SEEN$w,"
  if ((NO_TLS)) && [[ "$w" == tls_* ]]; then continue; fi
  RUN_W+=("$w")
  case "$w" in
    retr|stor|login|sessions|smallfiles) MAIN_W+=("$w") ;;
    stor_nohash) DO_NOHASH=1 ;;
    idle) DO_IDLE=1 ;;
    tls_retr|tls_sessions) TLS_W+=("$w") ;;
    tls_stor) DO_TLS_STOR=1 ;;
    chat_idle) DO_CHAT=1 ;;
    *) die "unknown workload $w (known: $ALL_WORKLOADS)" ;;
  esac
done
# what the peers' bench.py runs: the same, except that stor_nohash is their stor (they have no
# upload-digest switch) and tls_stor / chat_idle are run by our own scripts
PEER_W=("${MAIN_W[@]}")
if ((DO_NOHASH)) && [[ " ${MAIN_W[*]} " != *" stor "* ]]; then PEER_W+=(stor); fi
((DO_IDLE)) && PEER_W+=(idle)
PEER_W+=("${TLS_W[@]}")
MAIN_LIST="$(IFS=,; echo "${MAIN_W[*]}")"
TLS_LIST="$(IFS=,; echo "${TLS_W[*]}")"
PEER_LIST_W="$(IFS=,; echo "${PEER_W[*]}")"
IFS=',' read -r -a IDLE_NS <<<"$IDLE"
for n in "${IDLE_NS[@]}"; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "--idle wants numbers, got '$n'"; done
IFS=',' read -r -a PEER_LIST <<<"$PEERS"
[[ -n "$MAIN_LIST$TLS_LIST" ]] || ((DO_NOHASH || DO_IDLE || DO_TLS_STOR || DO_CHAT)) || die "no workloads"

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
    # bench.py (tls_stor.py, chat_idle.py) runs in its own process group (job control): SIGINT
    # there ends it (its finally-blocks stop the server it started) and its client children
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

# run a Python script in the background in its own process group, so that a signal to this
# script runs the trap at once (a foreground child would delay it until it ended)
run_bench() { # OUT_DIR bench.py-args...
  run_py "$HARNESS/bench.py" "$@"
}
run_py() { # SCRIPT OUT_DIR args...
  local script="$1" out="$2"; shift 2
  mkdir -p "$out"
  local rc=0
  set -m
  # --default-signal: a SIGINT ignored by whoever started us (e.g. a background job) would
  # otherwise be inherited, and the script could not be interrupted cleanly
  env --default-signal=INT python3 "$script" --out "$out" "$@" >"$out/stdout.md" \
    2> >(tee -a "$RES/bench.log" >&2) &
  BENCH_PID=$!
  set +m
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  if ((rc != 0)); then log "warning: ${script##*/} exited with $rc (see $out)"; fi
  return 0
}

start_ferry() { # LABEL [extra ferry serve args...]
  local label="$1" i
  shift
  local out="$WORKDIR/ferry-$label.stdout" errlog="$RES/raw/ferry-$label.log"
  local want="listening ftp 127.0.0.1:$PORT"
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "something already listens on 127.0.0.1:$PORT"
  fi
  set -m
  (
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # as the harness does for the peers
    exec "$FERRY" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" --passive-ports "$PASV" \
      "${FERRY_SETS[@]}" "$@"
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
  log "ferry started ($label${*:+: $*}): pid $FERRY_PID, log ${errlog#"$REPO"/}"
}

# Rough duration (seconds) of one run: per server and workload, from this 2-core box's earlier
# runs (shared/bench/results, bench/results); bench.py options in COMMON are taken into account.
estimate_run() {
  python3 - "$BIG" "$IDLE" "$CHAT_N" "$DO_NOHASH" "$DO_IDLE" "$DO_TLS_STOR" "$DO_CHAT" \
    "ferry,$PEERS" "$MAIN_LIST,$TLS_LIST" "${COMMON[@]}" <<'EOF'
import argparse, sys
big, idle, chat_n, nohash, do_idle, tls_stor, chat, servers, ws = sys.argv[1:10]
u = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
unit = next((k for k in sorted(u, key=len, reverse=True) if big.endswith(k)), "")
gib = float(big[: len(big) - len(unit)]) * u.get(unit, 1) / (1 << 30)
ap = argparse.ArgumentParser()
for o, d in (("repeats", 3), ("login-count", 500), ("clients", 200), ("rounds", 10), ("small-count", 2000),
             ("small-max-seconds", 60), ("max-seconds", 120)):
    ap.add_argument("--" + o, type=float, default=d)
o, _ = ap.parse_known_args(sys.argv[10:])
# per server: s/GiB of a curl stream (plain, FTPS), ms per sequential login, sessions/s (plain,
# FTPS), small files/s, ms to open one idle connection
S = {"ferry": (0.8, 1.5, 0.4, 1400, 500, 2000, 0.2), "vsftpd": (1.0, 2.5, 8, 37, 52, 1800, 4),
     "pure-ftpd": (1.0, 1.2, 12, 470, 202, 4000, 1.7), "proftpd": (1.5, 1.5, 5, 311, 65, 2500, 5.5),
     "pyftpdlib": (1.0, 1.5, 0.4, 862, 218, 2000, 0.12), "unftp": (4.5, 5.5, 0.4, 517, 377, 22.7, 0.1)}
ws = {w for w in ws.split(",") if w}
sessions = o.clients * o.rounds
t = 0.0
for s in servers.split(","):
    if s not in S:
        continue
    gps, gpst, login_ms, sps, spst, fps, idle_ms = S[s]
    t += 3  # start/stop
    for w, per in (("retr", gps), ("stor", gps), ("tls_retr", gpst)):
        if w in ws:
            t += 1.5 + o.repeats * (gib * per + 0.3)
    if s == "ferry" and nohash == "1":
        t += 3 + o.repeats * (gib * gps + 0.3)
    if tls_stor == "1":
        t += 3 + o.repeats * (gib * gpst + 0.3)
    if "login" in ws:
        t += 1 + o.login_count * login_ms / 1000
    if "sessions" in ws:
        t += 2 + min(sessions / sps, o.max_seconds)
    if "tls_sessions" in ws:
        t += 3 + min(sessions / spst, o.max_seconds)
    if "smallfiles" in ws:
        t += 1 + min(2 * o.small_count / fps, o.small_max_seconds)
    if do_idle == "1":
        for n in (int(x) for x in idle.split(",") if x):
            t += 4 + min(1.3 * n * idle_ms / 1000, o.max_seconds)
if chat == "1":
    t += 25 + int(chat_n) * 0.092  # ngIRCd ~65 ms per registration, InspIRCd ~22, Ferry ~5
print(int(t))
EOF
}

EST=$(($(estimate_run || echo 0) * RUNS))
dur() { if (($1 < 100)); then echo "~$1 s"; else echo "~$((($1 + 59) / 60)) min"; fi; }
log "expected duration: $(dur "$EST")$( ((BUILD)) && echo " plus the build" || true) ($RUNS run(s) x $(dur $((EST / RUNS))): Ferry + ${#PEER_LIST[@]} peer(s)$( ((DO_CHAT)) && echo ", chat idle" || true); a rough estimate from earlier runs on this box)"

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
if ((DO_CHAT)); then
  for s in ngircd inspircd; do
    command -v "$s" >/dev/null || log "warning: $s not installed: chat_idle.py leaves it out (apt-get install -y ngircd inspircd)"
  done
fi

# file descriptors and PIDs for the largest idle size: Ferry needs about one fd per idle
# session and the client (ftpload) one per connection; both raise their soft limit to the hard
# limit (Ferry here, ftpload itself), the peers get the hard limit from peer.py. vsftpd and
# Pure-FTPd fork two processes per session, ProFTPD one: that is against kernel.pid_max.
if ((DO_IDLE)); then
  max_idle=0
  for n in "${IDLE_NS[@]}"; do ((n > max_idle)) && max_idle=$n; done
  hard_nofile="$(ulimit -Hn)"
  if [[ "$hard_nofile" != unlimited ]] && ((hard_nofile < max_idle + 512)); then
    log "warning: RLIMIT_NOFILE hard limit $hard_nofile < $((max_idle + 512)): idle $max_idle will run out of fds (in Ferry and in ftpload)"
  fi
  pid_max="$(cat /proc/sys/kernel/pid_max)"
  tasks="$(ps -eL --no-headers 2>/dev/null | wc -l)"
  per=0
  for p in "${PEER_LIST[@]}"; do
    case "$p" in vsftpd|pure-ftpd) per=2 ;; proftpd) ((per < 1)) && per=1 ;; esac
  done
  if ((per && per * max_idle + tasks + 1000 > pid_max)); then
    log "warning: kernel.pid_max $pid_max: $((per * max_idle)) session processes of a forking peer + $tasks tasks now leave little room"
  fi
fi

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
  echo "runs: $RUNS; workloads: $(IFS=,; echo "${RUN_W[*]}")"
  echo "idle: $IDLE; chat clients: $CHAT_N; peers' bench.py workloads: $PEER_LIST_W"
  echo "bench.py / tls_stor.py options: ${COMMON[*]}"
  echo "ferry serve: --listen 127.0.0.1:$PORT --passive-ports $PASV ${FERRY_SETS[*]}"
  echo "  stor_nohash phase: + ${NOHASH_SETS[*]}; FTPS phases: + ${FERRY_TLS_ARGS[*]:-(nothing)}"
  echo "rlimit nofile (hard): $(ulimit -Hn); kernel.pid_max: $(cat /proc/sys/kernel/pid_max)"
  echo "expected duration: $(dur "$EST")"
} >"$RES/run.txt"
log "results -> ${RES#"$REPO"/}"

# ---------------------------------------------------------------- runs
for ((k = 1; k <= RUNS; k++)); do
  log "==== run $k/$RUNS: ferry"
  DATA="$WORKDIR/data-run$k"
  echo bench | "$FERRY" user add bench --password-stdin --data-dir "$DATA" >/dev/null
  HOME_DIR="$DATA/homes/bench"
  [[ -d "$HOME_DIR" ]] || die "ferry user add did not create $HOME_DIR"
  COLLECT=()
  target_args=(--target "127.0.0.1:$PORT" --name ferry --user bench --password bench --data-dir "$HOME_DIR")
  # every phase below gets a freshly started Ferry, as the harness restarts a peer for its
  # FTPS phase, for each idle size and (tls_stor.py) for the FTPS upload
  if [[ -n "$MAIN_LIST" ]]; then
    start_ferry "run$k-main"
    run_bench "$RES/raw/run$k-ferry-main" "${target_args[@]}" --server-pid "$FERRY_PID" \
      --workloads "$MAIN_LIST" "${COMMON[@]}"
    stop_ferry
    COLLECT+=("$RES/raw/run$k-ferry-main")
  fi
  if ((DO_NOHASH)); then
    # the harness's stor, on a Ferry that computes no SHA-256 of uploads; collect.py relabels it
    start_ferry "run$k-stor_nohash" "${NOHASH_SETS[@]}"
    run_bench "$RES/raw/run$k-ferry-stor_nohash" "${target_args[@]}" --server-pid "$FERRY_PID" \
      --workloads stor "${COMMON[@]}"
    stop_ferry
    COLLECT+=("$RES/raw/run$k-ferry-stor_nohash" --relabel "$RES/raw/run$k-ferry-stor_nohash" stor stor_nohash)
  fi
  if ((DO_IDLE)); then
    for n in "${IDLE_NS[@]}"; do
      # a fresh process per size: heap grown by earlier workloads would hide the per-connection cost
      start_ferry "run$k-idle$n"
      run_bench "$RES/raw/run$k-ferry-idle$n" "${target_args[@]}" --server-pid "$FERRY_PID" \
        --workloads idle --idle "$n" "${COMMON[@]}"
      stop_ferry
      COLLECT+=("$RES/raw/run$k-ferry-idle$n")
    done
  fi
  if [[ -n "$TLS_LIST" ]]; then
    start_ferry "run$k-tls" "${FERRY_TLS_ARGS[@]}"
    run_bench "$RES/raw/run$k-ferry-tls" "${target_args[@]}" --server-pid "$FERRY_PID" \
      --workloads "$TLS_LIST" "${COMMON[@]}"
    stop_ferry
    COLLECT+=("$RES/raw/run$k-ferry-tls")
  fi
  if ((DO_TLS_STOR)); then
    # FTPS upload (bench/tls_stor.py: the harness's stor with curl --ssl-reqd)
    start_ferry "run$k-tls_stor" "${FERRY_TLS_ARGS[@]}"
    run_py "$HERE/tls_stor.py" "$RES/raw/run$k-ferry-tls_stor" "${target_args[@]}" \
      --server-pid "$FERRY_PID" "${COMMON[@]}"
    stop_ferry
    COLLECT+=("$RES/raw/run$k-ferry-tls_stor")
  fi
  rm -rf -- "$DATA"

  peer_args=()
  for p in "${PEER_LIST[@]}"; do peer_args+=(--peer "$p"); done
  if ((${#peer_args[@]})) && { [[ -n "$PEER_LIST_W" ]] || ((DO_TLS_STOR)); }; then
    log "==== run $k/$RUNS: peers $PEERS"
    PEERS_ACTIVE=1
    if [[ -n "$PEER_LIST_W" ]]; then
      run_bench "$RES/raw/run$k-peers" "${peer_args[@]}" --workloads "$PEER_LIST_W" --idle "$IDLE" \
        "${COMMON[@]}"
      COLLECT+=("$RES/raw/run$k-peers")
    fi
    if ((DO_TLS_STOR)); then
      run_py "$HERE/tls_stor.py" "$RES/raw/run$k-peers-tls_stor" "${peer_args[@]}" "${COMMON[@]}"
      COLLECT+=("$RES/raw/run$k-peers-tls_stor")
    fi
    PEERS_ACTIVE=0
  fi

  if ((DO_CHAT)); then
    log "==== run $k/$RUNS: chat idle ($CHAT_N clients: ferry, ngircd, inspircd)"
    run_py "$HERE/chat_idle.py" "$RES/raw/chat-idle-run$k" --clients "$CHAT_N" --ferry-bin "$FERRY"
    COLLECT+=(--chat-idle "$RES/raw/chat-idle-run$k")
  fi

  python3 "$HERE/collect.py" "$RES" "$k" "${COLLECT[@]}" \
    --meta "ferry:version=$FERRY_VERSION" --meta "ferry:commit=$COMMIT" >/dev/null
done

# ---------------------------------------------------------------- table
FTPBENCH_HARNESS="$HARNESS" python3 "$HERE/table.py" "$RES" --order "ferry,$PEERS,ngircd,inspircd" >"$RES/table.md"
for f in "$RES"/raw/*.log "$RES/bench.log"; do
  if [[ -f "$f" ]] && (($(stat -c %s "$f") > 1048576)); then gzip -9 "$f"; fi
done
{
  echo
  echo "Ferry $FERRY_VERSION ($COMMIT) vs $PEERS, $RUNS run(s)$( ((QUICK)) && echo ', --quick (smoke sizes: not comparable with full runs, targets not meaningful)' || true)."
  echo "Cells: median [min-max] over runs. CPU % of one core (200 % = both cores)."
  echo
  cat "$RES/table.md"
  echo
}
log "done in $((SECONDS - T0)) s (expected $(dur "$EST")): ${RES#"$REPO"/}/table.md (raw JSON beside it, logs in raw/)"
