"""The training loader: manifest check, the resumable (seed, epoch, world size)-ordered stream, typed batches."""
