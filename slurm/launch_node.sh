#!/bin/bash
# One node's launcher, started by train_8node.sh's srun on every node: torchrun for this node's processes.
#
# Reads (exported by train_8node.sh): PYTHON NNODES NPROC MASTER_ADDR MASTER_PORT SHUTDOWN_TIMEOUT ENTRY CONFIG
# OVERRIDES, and SLURM_NODEID from srun. On USR1 the training processes checkpoint and exit (pipeline.train:
# status 143); torchrun itself ignores USR1 so it does not tear them down half-way, and this node then reports
# success to srun, so that --kill-on-bad-exit does not kill a node that is still finishing its checkpoint.

STOP=""
on_usr1() {
  STOP=1
  # Slurm signals every process of the step; hand it on anyway in case only this task was signalled.
  [ -n "${TORCHRUN_PID:-}" ] && pkill -USR1 -P "$TORCHRUN_PID" 2>/dev/null
}
trap on_usr1 USR1
trap 'STOP=1' TERM  # torchrun got TERM too (Slurm signals the whole step) and hands it to its workers

# A subshell that ignores USR1 before exec: torchrun (and its workers until they install a handler) inherit it.
(
  trap '' USR1
  exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node-rank="$SLURM_NODEID" \
    --nproc-per-node="$NPROC" --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" --max-restarts=0 \
    --shutdown-timeout="$SHUTDOWN_TIMEOUT" -m "$ENTRY" --config "$CONFIG" $OVERRIDES
) &
TORCHRUN_PID=$!

while :; do
  wait "$TORCHRUN_PID"; RC=$?
  if [ "$RC" -gt 128 ] && kill -0 "$TORCHRUN_PID" 2>/dev/null; then continue; fi  # wait cut short by the trap
  break
done
if [ -n "$STOP" ] && [ "$RC" -ne 0 ]; then
  echo "launcher on ${SLURMD_NODENAME:-$(hostname)}: stopped on USR1 (training status $RC: checkpointed)" >&2
  exit 0
fi
exit "$RC"
