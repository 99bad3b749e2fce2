"""Tests of the Slurm scripts on a real 8-node Slurm cluster emulated on this machine."""
