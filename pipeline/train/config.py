"""Training's sections of the config tree: the Matryoshka objective, the loop, and MLflow tracking."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import model_validator

from pipeline.configlib import FieldError, NonNegFloat, NonNegInt, PosFloat, PosInt, Section
from pipeline.data.config import DataConfig
from pipeline.model.config import BudgetField, ModelConfig

# Database stores whose runs would otherwise put artifacts under the current directory (./mlruns).
_DB_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")


class LossConfig(Section):
    """The width x depth x count Matryoshka objective (pipeline/train/loss.py)."""

    temperature: PosFloat = 0.02
    """Scores are divided by this before the softmax."""
    budgets: Literal["grid", "2d", "full", "diagonal", "only"] = "grid"
    """grid: every (exit, width, pool); 2d: pool 1 only; full: the full budget only; diagonal: a fixed list from the
    full budget down, the i-th deepest exit with the i-th widest width and pools from finest to coarsest (Starbucks'
    diagonal, extended with count); only: the one budget `loss.only` (a separately trained baseline)."""
    sample_k: NonNegInt = 0
    """grid/2d: 0 trains every budget each step, k the full budget plus k sampled ones; diagonal: k budgets off the
    diagonal sampled in addition. Draws are the same on every rank."""
    only: BudgetField | None = None
    """The budget trained alone when budgets is only, e.g. L2-d32-p2 (fp16: see qat for quantised pages)."""
    always: list[BudgetField] = []
    """Budgets trained at every step besides the recipe's, e.g. a serving cascade's first stage (L4-d128-page: one
    vector per page, the mean of its vectors); each must be in the grid (model.pools lists page for it)."""
    distill_ramp_steps: NonNegInt = 0
    """distill_weight rises linearly from 0 over this many steps (0: the full weight from step 0)."""
    full_weight: NonNegFloat = 1.0
    """Weight of the full budget's loss."""
    small_weight: NonNegFloat = 1.0
    """Weight of every other budget's loss."""
    distill_weight: NonNegFloat = 0.0
    """KL of each smaller budget's scores towards the full budget's."""
    distill_temperature: PosFloat = 1.0
    """Temperature of the self-distillation softmax."""
    normalize: bool = True
    """Divide the weighted sum by the sum of weights (scale independent of the number of budgets)."""
    sample_seed: int = 0
    """sample_k draws are seeded by (sample_seed, step)."""
    qat: Literal["none", "int8", "bin"] = "none"
    """Quantisation-aware training: every budget trained at a step except the full one is also trained with its page
    vectors at this precision (straight-through: quantised forward, identity gradient), at small_weight."""

    @model_validator(mode="after")
    def check(self):
        if self.full_weight == 0 and self.small_weight == 0 and self.distill_weight == 0:
            raise FieldError("full_weight", "full_weight, small_weight and distill_weight are all 0: nothing to train")
        if (self.budgets == "only") != (self.only is not None):
            raise FieldError("only", "set it (a budget like L2-d32-p2) exactly when budgets is only")
        if any(b.precision != "fp16" for b in self.always):
            raise FieldError("always", f"{[str(b) for b in self.always]}: train fp16 budgets (see loss.qat)")
        if self.only is not None and self.only.precision != "fp16":
            raise FieldError("only", f"{self.only} is stored at {self.only.precision}: train fp16 (see loss.qat)")
        return self


class TrainConfig(Section):
    """The training loop (pipeline/train)."""

    output_dir: str = "demo_out/run"
    """Checkpoints, final/, run.json, metrics.jsonl and the resolved config."""
    steps: PosInt = 100
    """Optimizer steps to train (a resumed run continues to this count)."""
    lr: PosFloat = 2e-4
    """Peak learning rate (after warm-up, then cosine decay)."""
    warmup_steps: NonNegInt = 10
    """Linear warm-up steps."""
    weight_decay: NonNegFloat = 0.0
    """Decoupled weight decay of matrices (biases and norms never decay)."""
    grad_clip: NonNegFloat = 1.0
    """Gradient norm clipping (0: off)."""
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = "adamw"
    """adamw, adamw8bit (bitsandbytes) or sgd (plain; for exactness tests)."""
    deepspeed_config: str = "deepspeed_configs/zero3.json"
    """DeepSpeed JSON; its "auto" fields are filled from this config."""
    grad_cache: bool = True
    """Gradient cache over chunks (memory flat in the batch size); false: one plain forward per step."""
    chunk_size: PosInt = 4
    """Pairs per gradient-cache chunk on one rank."""
    seed: int = 0
    """Seed of the model's random state (per rank: seed + rank)."""
    checkpoint_every: PosInt = 50
    """Steps between checkpoints (the last step always saves one)."""
    keep_checkpoints: PosInt = 2
    """Complete checkpoints kept (the newest ones)."""
    log_every: PosInt = 10
    """Steps between logged metrics."""
    dist_timeout_s: PosFloat = 1800.0
    """Seconds a rank waits in a collective (or the rendezvous) for the others before failing."""
    eval_every: NonNegInt = 0
    """Steps between in-training evaluations of nDCG@5 at curve_budgets on the eval section's set (the learning
    curve, to MLflow and metrics.jsonl; every rank encodes, rank 0 logs); 0: none."""
    curve_budgets: list[BudgetField] = ["full"]
    """Budgets of the learning curve: full (the full budget) or budgets like L2-d32-p2 or L2-d32-p2-bin."""


class TrackingConfig(Section):
    """MLflow tracking and registry."""

    tracking_uri: str = "sqlite:///demo_out/mlruns.db"
    """sqlite:///FILE, another database URI, or an MLflow server (http://HOST:PORT)."""
    experiment: str = "budget-elastic-retrieval"
    """MLflow experiment of training and export runs."""
    artifact_location: str | None = None
    """Artifact root of a new experiment; null: next to a SQLite file (mlartifacts/), else the server's root."""
    run_name: str | None = None
    """Name of a new training run."""
    registered_model: str = "retriever-tiny"
    """Registered model that holds the variants."""
    system_metrics: bool = True
    """Log CPU/GPU/memory metrics with the training run."""

    @model_validator(mode="after")
    def check(self):
        for name in ("tracking_uri", "experiment", "registered_model"):
            if not getattr(self, name):
                raise FieldError(name, "must not be empty")
        scheme = self.tracking_uri.split(":", 1)[0].split("+", 1)[0]
        if scheme in _DB_SCHEMES and not self.artifact_location:
            raise FieldError("artifact_location", f"a {scheme} store needs it (else artifacts land in the current "
                                                  "directory)")
        return self


class TrainingTree(Protocol):
    """The sections training reads, in any tree that holds them (pipeline.config.Config, a run's whole YAML)."""

    model: ModelConfig
    loss: LossConfig
    data: DataConfig
    train: TrainConfig
    tracking: TrackingConfig
