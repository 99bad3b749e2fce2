"""Run an entry point with the heavy libraries made unimportable (torch, DeepSpeed, transformers, Ray, MLflow): a
command that refuses a bad config must do so before it imports any of them, whatever the machine's load.

    python tests/helpers/light_run.py -m pipeline.train --config ...      (or: light_run.py data_prep/synth.py ...)
"""

import runpy
import sys

HEAVY = ("torch", "deepspeed", "transformers", "ray", "mlflow")

if __name__ == "__main__":
    for name in HEAVY:
        sys.modules[name] = None  # `import torch` now raises ImportError: a traceback, not one line
    if sys.argv[1] == "-m":
        sys.argv = [sys.argv[2], *sys.argv[3:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[0]).resolve().parent))
        runpy.run_path(sys.argv[0], run_name="__main__")
