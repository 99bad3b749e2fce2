"""Run an entry point with the heavy libraries made unimportable (torch, DeepSpeed, transformers, Ray, MLflow): a
command that refuses a bad config must do so before it imports any of them, whatever the machine's load.

    python tests/helpers/light_run.py -m pipeline.train --config ...      (or: light_run.py data_prep/synth.py ...)
"""

import os
import runpy
import sys

HEAVY = ("torch", "deepspeed", "transformers", "ray", "mlflow")

if __name__ == "__main__":
    for name in HEAVY:
        sys.modules[name] = None  # `import torch` now raises ImportError: a traceback, not one line
    # sys.path[0] is this helper's folder; Python puts the working directory (-m) or the script's folder there
    if sys.argv[1] == "-m":
        sys.argv = [sys.argv[2], *sys.argv[3:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
        runpy.run_path(sys.argv[0], run_name="__main__")
