"""Shared test set-up: the CPU-only environment, the GPU marker, the tier markers, how tests are grouped across
pytest-xdist workers, and the heavy fixtures the suite builds once (tiny models, the reference training run).

Heavy artifacts (files) are built once per test session whatever the number of xdist workers: the first worker to
ask builds them under a file lock in the session's shared directory, the others wait and reuse them. Tests read
them and copy before they change anything. Servers (MLflow, the model server, Ray, Slurm) are processes: their
fixtures live in the package that uses them, and the scheduler keeps every test of one server on one worker.
"""

import os
from collections import OrderedDict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".venv" / "torch_extensions"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The venv's bin first, so subprocesses (ray, mlflow, deepspeed, torchrun) are the project's.
os.environ["PATH"] = str(ROOT / ".venv" / "bin") + os.pathsep + os.environ.get("PATH", "")

# Fixtures that start processes or train: a test using one is `heavy` (left out of `make test-fast`).
HEAVY_FIXTURES = {"reference_run", "chain", "ray_head", "slurm_cluster", "tracking_uri", "model_server", "runs",
                  "uninterrupted", "narrow_vocab_checkpoints"}


# Tests that share a server process (a session fixture) run on one xdist worker, so one server is started: the
# scheduler below keeps each of these path prefixes together, and every other module together. The real-width test
# joins the Slurm cluster's scope: the two that start the most memory and processes (2 ranks of ~6 GB; 8 nodes of
# launcher + rank) run one after the other instead of side by side, where both took up to 1.6x as long.
SERVER_SCOPES = {"tests/slurm/": "slurm", "tests/plan/test_real_width.py": "slurm", "tests/serve/": "model-server",
                 "tests/registry/test_promotion": "mlflow-server", "tests/data_prep/test_render.py": "ray"}
SERVER_FIXTURES = {"slurm_cluster": "slurm", "model_server": "model-server", "tracking_uri": "mlflow-server",
                   "ray_head": "ray"}


def scope_of(nodeid: str) -> str:
    """The unit of work an xdist worker takes whole: a server's tests, else the test's module."""
    return next((name for prefix, name in SERVER_SCOPES.items() if nodeid.startswith(prefix)), nodeid.split("::")[0])


# The longest scopes, longest first (measured with --durations=0), start before everything else: xdist's loadscope
# hands out the scopes with the most tests first, which left single minutes-long tests to the end on one worker
# while the other sat idle. The first builds the reference training run while the second, which does not need it,
# runs beside it.
LONGEST_FIRST = ["tests/train/test_train_e2e.py", "slurm", "tests/train/test_step_equivalence.py",
                 "tests/plan/test_measured.py", "tests/train/test_refusals.py", "ray",
                 "tests/train/test_checkpoint_resume.py", "model-server", "mlflow-server",
                 "tests/train/test_bad_samples.py", "tests/test_tracking_store.py", "tests/plan/test_activations.py",
                 "tests/plan/test_gpu_step.py", "tests/registry/test_pyfunc_concurrency.py", "tests/plan/test_plan.py",
                 "tests/model/test_concurrency.py"]


def rank(scope: str) -> int:
    return LONGEST_FIRST.index(scope) if scope in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_xdist_make_scheduler(config, log):
    """Like --dist loadscope, with the scopes of scope_of() (xdist's own loadgroup does not reach pytest 9's node ids),
    handed out longest first (LONGEST_FIRST, then the rest in pytest-randomly's order)."""
    from xdist.scheduler import LoadScopeScheduling

    class ServerScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            if not getattr(self, "_ordered", False):  # the first hand-out: the queue is complete, nothing sent yet
                # stable: the scopes LONGEST_FIRST does not name keep pytest-randomly's order (loadscopereorder off)
                self.workqueue = OrderedDict(sorted(self.workqueue.items(), key=lambda unit: rank(unit[0])))
                self._ordered = True
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False

    return ServerScopes(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Skip GPU tests without CUDA; mark `heavy` tests; refuse a test that uses a server fixture outside the scope
    that keeps the server's tests on one worker."""
    import torch

    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
        fixtures = set(getattr(item, "fixturenames", ()))
        if HEAVY_FIXTURES & fixtures:
            item.add_marker(pytest.mark.heavy)
        for fixture in fixtures & set(SERVER_FIXTURES):
            if scope_of(item.nodeid) != SERVER_FIXTURES[fixture]:
                raise pytest.UsageError(f"{item.nodeid} uses {fixture}: put it under a path SERVER_SCOPES (tests/"
                                        "conftest.py) maps to its server, or two workers start two servers")


@pytest.fixture(autouse=True)
def _process_state_unchanged():
    """Every test starts from the worker's environment variables and signal state as they were before it: a
    variable a test (or a library it calls first: ray.init, torch's inductor) sets is taken back after it, whichever
    test comes next. Ignoring or blocking a signal fails the test that did it, besides being undone: every process a
    later test starts would inherit it (a blocked SIGINT: Ctrl-C reaches none of them). Python-level handlers are not
    inherited across exec (ray.init installs one for SIGTERM): they are put back without failing."""
    import signal

    def state() -> tuple[dict, dict, set]:
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)}
        return dict(os.environ), handlers, signal.pthread_sigmask(signal.SIG_BLOCK, [])

    env, handlers, mask = state()
    yield
    _, handlers_after, mask_after = state()
    current_test = os.environ.get("PYTEST_CURRENT_TEST")  # pytest's own, set per phase
    os.environ.clear()
    os.environ.update(env)
    if current_test is not None:
        os.environ["PYTEST_CURRENT_TEST"] = current_test
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for s, handler in handlers.items():
        signal.signal(s, handler)
    ignored = {s for s, h in handlers.items() if h == signal.SIG_IGN}
    ignored_after = {s for s, h in handlers_after.items() if h == signal.SIG_IGN}
    assert (ignored_after, mask_after) == (ignored, mask), f"ignored, blocked signals: {ignored, mask} -> " \
                                                           f"{ignored_after, mask_after}"


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_restored(_process_state_unchanged):
    """A test that points MLflow's process-wide tracking URI somewhere (a server, a store) leaves it as it was:
    the next test, whichever it is, starts from the same global state (torn down before _process_state_unchanged
    restores the environment, which mlflow.set_tracking_uri also changes: MLFLOW_TRACKING_URI)."""
    import sys

    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    before = utils._tracking_uri if utils else None  # None: not set in this process (the environment decides)
    yield
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils and utils._tracking_uri != before:
        utils.set_tracking_uri(before)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A directory every xdist worker of this session sees (the session's base temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(exist_ok=True)
    return root


def build_once(shared: Path, name: str, build) -> Path:
    """`shared/<name>`, built by `build(path)` by whichever worker gets there first (the others wait on a lock)."""
    from filelock import FileLock

    out, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def tiny_qwen2vl_dir(shared_dir):
    """A tiny random Qwen2-VL checkpoint (plain VLM, no retriever heads), one per session."""
    from pipeline.model.tiny import build_tiny_qwen2vl

    return build_once(shared_dir, "tiny-qwen2vl", build_tiny_qwen2vl)


@pytest.fixture(scope="session")
def tiny_paligemma_dir(shared_dir):
    """A tiny random PaliGemma checkpoint (plain VLM, no retriever heads), one per session."""
    from pipeline.model.tiny import build_tiny_paligemma

    return build_once(shared_dir, "tiny-paligemma", build_tiny_paligemma)


@pytest.fixture(scope="session")
def reference_run(shared_dir, tiny_qwen2vl_dir):
    """The suite's reference training run, read by the resume, checkpoint, curve, export, evaluation, registry and
    serving tests (copy it before changing it: `tests.helpers.training.copy_run`): `python -m pipeline.train` on
    2 ranks under ZeRO-3 with the gradient cache, 24 synthetic pages, REFERENCE_STEPS steps, a checkpoint every 2
    (all kept), the learning curve on the training pages every 2 steps. Returns its config path."""
    from tests.helpers.reference_run import build_reference_run

    build_once(shared_dir, "reference", lambda out: build_reference_run(out, tiny_qwen2vl_dir))
    return shared_dir / "reference" / "ref.yaml"


@pytest.fixture(scope="session")
def chain(tmp_path_factory, reference_run):
    """The post-training stages over the reference run's final model (tests/helpers/chain.py), one per worker."""
    import yaml

    from tests.helpers.chain import Chain

    final = Path(yaml.safe_load(reference_run.read_text())["train"]["output_dir"]) / "final"
    return Chain(tmp_path_factory.mktemp("chain"), final)


def pytest_collection_finish(session):
    """Each worker's heap after collection (torch, transformers, MLflow, every test module) is frozen out of Python's
    garbage collections, as pipeline.gc_phases does for a training's set-up: the tests' collections walk only what
    the tests make."""
    import gc

    gc.collect()
    gc.freeze()
