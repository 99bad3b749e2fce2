"""Ranks that do not track import DeepSpeed without MLflow: DeepSpeed's autotuner (never used here) imports MLflow
when it is installed, 1 s of each rank's start. MLflow still imports afterwards, for rank 0's tracker."""

import json
import subprocess
import sys

from tests.helpers.procs import ROOT

PROBE = """
import json, sys
{imports}
before = "mlflow" in sys.modules
import mlflow
from deepspeed.autotuning import autotuner
print(json.dumps({{"before": before, "later": mlflow.MlflowClient is not None, "autotuner": autotuner.has_mlflow}}))
"""


def probe(imports: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_deepspeed_comes_without_mlflow_and_mlflow_still_imports_later():
    got = probe("from pipeline.train.engine import import_deepspeed\nimport_deepspeed()")
    assert got == {"before": False, "later": True, "autotuner": False}


def test_negative_control_a_plain_import_brings_mlflow():
    assert probe("import deepspeed")["before"] is True
