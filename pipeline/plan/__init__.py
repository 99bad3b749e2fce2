"""Plan a run before booking GPUs: the configured architecture's size (built on the meta device), tokens and FLOPs
per step, per-GPU memory under the configured ZeRO stage, and step time at stated utilisations.

`python -m pipeline.plan --config CONFIG [--nodes N] [--gpus-per-node G] [--gpu-memory-gib M] [--json]`.
"""
