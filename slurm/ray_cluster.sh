#!/bin/bash
# A Ray cluster inside a Slurm allocation: head on the first node, one worker per other node, for `ray job submit`.
#
#   sbatch --nodes=4 slurm/ray_cluster.sh             # waits until the time limit or scancel; the address is in the log
#   COMMAND='ray job submit --working-dir . -- python data_prep/render.py --config configs/tiny.yaml' \
#     sbatch --nodes=4 slurm/ray_cluster.sh           # runs COMMAND on the head node once every node joined, then stops
#
# The head's GCS listens on the first node's Slurm NodeAddr (workers must reach it); the dashboard and job API
# listen on DASHBOARD_HOST, 127.0.0.1 by default: submit from the head node (COMMAND) or through an SSH tunnel.
# Before binding the dashboard anywhere else, turn on Ray's token authentication (RAY_AUTH_MODE=token; see README).
#SBATCH --job-name=ray-cluster
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out

# ---- settings: environment variables, with their defaults -----------------------------------------------
WORKDIR=${WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}  # the repository checkout (COMMAND runs there)
VENV=${VENV:-$WORKDIR/.venv}                    # virtual environment on a path every node sees
RAY=${RAY:-$VENV/bin/ray}                       # the ray CLI (ray on PATH when VENV has none)
RAY_PORT=${RAY_PORT:-6379}                      # GCS port on the head node
DASHBOARD_HOST=${DASHBOARD_HOST:-127.0.0.1}     # where the dashboard + job API listen (0.0.0.0 only with token auth)
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}          # dashboard + job API port
NUM_CPUS=${NUM_CPUS:-${SLURM_CPUS_ON_NODE:-}}   # CPUs Ray schedules per node (empty: Ray detects)
NUM_GPUS=${NUM_GPUS:-}                          # GPUs Ray schedules per node (empty: Ray detects)
RAY_TMP=${RAY_TMP:-/tmp/ray-${SLURM_JOB_ID:-0}} # node-local session dir; keep it short (unix sockets)
HEAD_ARGS=${HEAD_ARGS:-}                        # extra `ray start --head` options, e.g. "--ray-client-server-port=10001"
WORKER_ARGS=${WORKER_ARGS:-}                    # extra `ray start` options for the workers
START_TIMEOUT=${START_TIMEOUT:-180}             # s to wait for the head and for every worker to join
COMMAND=${COMMAND:-}                            # run on the head node once the cluster is up; empty: wait
LOG_DIR=${LOG_DIR:-$WORKDIR/logs/slurm}         # per-node Ray logs and ray-<job id>.address

set -uo pipefail
cd "$WORKDIR" || { echo "WORKDIR $WORKDIR does not exist" >&2; exit 1; }
[ -x "$RAY" ] || RAY=$(command -v ray)
PYTHON=$(dirname "$RAY")/python; [ -x "$PYTHON" ] || PYTHON=$(command -v python3)
NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
HEAD_ADDR=$(scontrol show node "$HEAD_NODE" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n 1)
HEAD_ADDR=${HEAD_ADDR:-$HEAD_NODE}
GCS="$HEAD_ADDR:$RAY_PORT"
case "$DASHBOARD_HOST" in 0.0.0.0|127.0.0.1|localhost) JOB_API="http://127.0.0.1:$DASHBOARD_PORT" ;;
  *) JOB_API="http://$DASHBOARD_HOST:$DASHBOARD_PORT" ;; esac
mkdir -p "$LOG_DIR"
log() { echo "$(date '+%F %T') [ray-cluster ${SLURM_JOB_ID:-}] $*"; }
if [ "$DASHBOARD_HOST" != 127.0.0.1 ] && [ "${RAY_AUTH_MODE:-disabled}" != token ]; then
  log "WARNING: dashboard/job API on $DASHBOARD_HOST without token authentication: anyone who reaches it runs code"
fi
# A loopback head means every "node" is this one machine (an emulated cluster): Ray then needs to be told that
# workers joining a 127.0.0.1 head are intended.
case "$HEAD_ADDR" in 127.*|localhost) export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 ;; esac
resources=(${NUM_CPUS:+--num-cpus=$NUM_CPUS} ${NUM_GPUS:+--num-gpus=$NUM_GPUS})

STEPS=()
teardown() {
  trap - EXIT TERM INT
  log "stopping Ray"
  for pid in "${STEPS[@]}"; do kill -TERM "$pid" 2>/dev/null; done  # srun hands TERM to `ray start --block`
  for pid in "${STEPS[@]}"; do
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null
  done
}
trap teardown EXIT
trap 'exit 143' TERM INT

# Wait until `ray status` counts $1 live nodes (or time out).
wait_nodes() {
  local want=$1 deadline=$((SECONDS + START_TIMEOUT)) have=0
  while [ "$SECONDS" -lt "$deadline" ]; do
    have=$("$PYTHON" - "$GCS" <<'EOF' 2>/dev/null
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
EOF
)
    [ "${have:-0}" -ge "$want" ] && return 0
    sleep 2
  done
  log "only ${have:-0} of $want Ray nodes joined in $START_TIMEOUT s"; return 1
}

srun --nodes=1 --ntasks=1 --nodelist="$HEAD_NODE" --output="$LOG_DIR/ray-${SLURM_JOB_ID}-head.log" \
  "$RAY" start --head --block --node-ip-address="$HEAD_ADDR" --port="$RAY_PORT" \
  --dashboard-host="$DASHBOARD_HOST" --dashboard-port="$DASHBOARD_PORT" --temp-dir="$RAY_TMP" \
  --disable-usage-stats "${resources[@]}" $HEAD_ARGS &
STEPS+=($!)
wait_nodes 1 || exit 1
if [ "$NNODES" -gt 1 ]; then
  srun --nodes=$((NNODES - 1)) --ntasks=$((NNODES - 1)) --ntasks-per-node=1 --exclude="$HEAD_NODE" \
    --output="$LOG_DIR/ray-${SLURM_JOB_ID}-worker%n.log" \
    bash -c 'exec "$0" start --block --address="$1" --temp-dir="$2" --disable-usage-stats "${@:3}"' \
    "$RAY" "$GCS" "$RAY_TMP" "${resources[@]}" $WORKER_ARGS &
  STEPS+=($!)
  wait_nodes "$NNODES" || exit 1
fi
echo "RAY_ADDRESS=$JOB_API" > "$LOG_DIR/ray-${SLURM_JOB_ID}.address"
log "Ray cluster up: $NNODES nodes; GCS $GCS; job API $JOB_API (on $HEAD_NODE)"
log "submit from $HEAD_NODE: RAY_ADDRESS=$JOB_API ray job submit --working-dir . -- python data_prep/render.py ..."

if [ -n "$COMMAND" ]; then
  RAY_ADDRESS=$JOB_API bash -c "$COMMAND"; RC=$?
  log "COMMAND ended with status $RC"
  exit "$RC"
fi
wait "${STEPS[0]}"  # until the time limit or scancel (TERM -> teardown)
