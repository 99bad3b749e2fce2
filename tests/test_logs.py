"""Logging reads the launcher's rank the way training does: only rank 0 speaks at INFO, every rank warns."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEAK = ("import logging; from pipeline.logs import setup_logging; setup_logging(); "
         "logging.getLogger('t').info('hello'); logging.getLogger('t').warning('careful')")
LAUNCHERS = [  # (the launcher's variables, the rank they name)
    ({"RANK": "1", "WORLD_SIZE": "2"}, 1), ({"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}, 3),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, 1), ({"RANK": "0", "WORLD_SIZE": "2"}, 0), ({}, 0),
]
LAUNCH_VARS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK",
               "OMPI_COMM_WORLD_SIZE"}


@pytest.mark.parametrize("variables,rank", LAUNCHERS)
def test_only_rank_0_logs_info(variables, rank):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS} | variables | {"PYTHONPATH": str(ROOT)}
    err = subprocess.run([sys.executable, "-c", SPEAK], env=env, capture_output=True, text=True, check=True).stderr
    assert f"[rank{rank}] WARNING t: careful" in err
    assert ("hello" in err) == (rank == 0), err
