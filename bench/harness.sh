# Sourced by bench/run.sh and bench/placement.sh: this folder (HERE), the repo (REPO), the shared
# benchmark harness (HARNESS: $FTPBENCH_HARNESS, else ../shared/bench beside the repo, else
# /work/shared/bench) and its work dir (FTPBENCH_WORK, default /var/tmp/ftpbench).
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
