#!/bin/bash
# Multi-node training under Slurm: one torchrun launcher per node, DeepSpeed over every GPU; USR1 -> checkpoint -> requeue.
#
#   sbatch slurm/train_8node.sh                                    # 8 nodes x 8 GPUs, configs/colqwen2_2b.yaml
#   CONFIG=configs/tiny.yaml OVERRIDES="train.steps=500" sbatch --partition=gpu --account=me slurm/train_8node.sh
#   GPUS_PER_NODE=0 sbatch --gpus-per-node=0 slurm/train_8node.sh  # CPU nodes: one process per node (gloo)
#
# Site specifics (partition, account, QoS, time, node count) are sbatch options on the command line, which
# override the header below. Before the time limit Slurm sends USR1 to this shell (--signal=B:USR1@120): it is
# forwarded to the training, which checkpoints and exits; then the job requeues itself and the new run
# (SLURM_RESTART_COUNT > 0) resumes from the latest checkpoint, in the same MLflow run, on the same batches.
#SBATCH --job-name=retriever-train
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

# ---- settings: environment variables, with their defaults -----------------------------------------------
WORKDIR=${WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}        # the repository checkout; every rank runs there
CONFIG=${CONFIG:-configs/colqwen2_2b.yaml}            # the run config (YAML), relative to WORKDIR or absolute
OVERRIDES=${OVERRIDES:-}                              # dotted overrides, space-separated: "train.steps=500 train.lr=1e-4"
ENTRY=${ENTRY:-pipeline.train}                        # the module every rank runs: python -m $ENTRY --config ...
VENV=${VENV:-$WORKDIR/.venv}                          # virtual environment on a path every node sees
PYTHON=${PYTHON:-$VENV/bin/python}                    # its interpreter (python3 on PATH when VENV has none)
GPUS_PER_NODE=${GPUS_PER_NODE:-8}                     # training processes per node; 0: CPU nodes, one process each
MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}  # rendezvous port on the first node
LOG_DIR=${LOG_DIR:-$WORKDIR/logs/slurm}               # per-node logs: <job name>-<job id>-r<restart>-node<k>.log
SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT:-100}             # s torchrun gives its workers after TERM (< 120 of --signal)
REQUEUE=${REQUEUE:-1}                                 # 1: requeue after a USR1 checkpoint; 0: just stop
# NCCL_*, OMP_NUM_THREADS, HF_HOME, TMPDIR, ... in the submitting environment reach every rank.

set -uo pipefail
cd "$WORKDIR" || { echo "WORKDIR $WORKDIR does not exist" >&2; exit 1; }
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
NPROC=$(( GPUS_PER_NODE > 0 ? GPUS_PER_NODE : 1 ))
ATTEMPT=${SLURM_RESTART_COUNT:-0}
NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
# The first node of the allocation hosts the rendezvous; Slurm's NodeAddr is the address it answers on.
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=${MASTER_ADDR:-$(scontrol show node "$HEAD_NODE" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p' | head -n 1)}
MASTER_ADDR=${MASTER_ADDR:-$HEAD_NODE}
mkdir -p "$LOG_DIR"
export WORKDIR CONFIG OVERRIDES ENTRY PYTHON NPROC NNODES MASTER_ADDR MASTER_PORT SHUTDOWN_TIMEOUT

log() { echo "$(date '+%F %T') [batch ${SLURM_JOB_ID} attempt ${ATTEMPT}] $*"; }
log "nodes=$SLURM_JOB_NODELIST ($NNODES) x $NPROC processes; rendezvous $MASTER_ADDR:$MASTER_PORT;" \
    "$PYTHON -m $ENTRY --config $CONFIG $OVERRIDES"

# USR1 (time limit near, or `scancel --batch --signal=USR1`): the training checkpoints and stops, we requeue.
# TERM (scancel, preemption): the training checkpoints if it can; Slurm itself decides about requeueing.
STOPPING=""
on_signal() {
  [ -n "$STOPPING" ] && return
  STOPPING=$1
  log "got SIG$1: asking every rank to checkpoint and stop"
  scancel --signal=USR1 "$SLURM_JOB_ID" || kill -USR1 "$STEP_PID"  # every process of the job's steps, not this shell
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

# One launcher per node (slurm/launch_node.sh: torchrun, which ignores USR1 while its workers checkpoint; on
# TERM it hands the signal on and gives them SHUTDOWN_TIMEOUT s before SIGKILL).
srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  ${SLURM_CPUS_ON_NODE:+--cpus-per-task=$SLURM_CPUS_ON_NODE} \
  --output="$LOG_DIR/${SLURM_JOB_NAME:-job}-${SLURM_JOB_ID}-r${ATTEMPT}-node%n.log" \
  bash "$WORKDIR/slurm/launch_node.sh" &
STEP_PID=$!

# `wait` returns early when a trapped signal arrives: keep waiting until the step has really ended.
while :; do
  wait "$STEP_PID"; RC=$?
  if [ "$RC" -gt 128 ] && kill -0 "$STEP_PID" 2>/dev/null; then continue; fi
  break
done
log "training step ended with status $RC"

if [ "$STOPPING" = USR1 ] && [ "$REQUEUE" = 1 ]; then
  log "requeueing (restart $((ATTEMPT + 1))): the next run resumes from the latest checkpoint"
  scontrol requeue "$SLURM_JOB_ID" && exit 0
  log "scontrol requeue failed"
fi
exit "$RC"
