"""Every on-disk contract of the pipeline, in one place: files (sha256, atomic writes), shards (names, samples,
manifest) and the run directory (checkpoints, final weights, evaluation, variants). Stages read and write these
layouts only through this package; docs/interfaces.md points here."""
