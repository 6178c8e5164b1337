"""The trainer's settings: one dataclass, filled from YAML/CLI by the caller (no argparse here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from qkv.hardware import PRECISIONS
from qkv.training.optim import SCHEDULES

ATTENTION_BACKENDS = ("math", "flash", "efficient", "cudnn")


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        steps: optimiser updates to make.
        lr: base learning rate; the peak rate for ``cosine``/``constant``, a factor for ``inverse_sqrt``
            (1.0 gives the paper's absolute rate).
        warmup: warm-up updates.
        schedule: one of ``constant``, ``cosine``, ``inverse_sqrt``.
        min_lr_ratio: final multiplier of ``cosine``.
        d_model: model width for ``inverse_sqrt`` (required there).
        weight_decay: AdamW decay of weight matrices (not biases, norms, embeddings).
        betas: AdamW betas.
        eps: AdamW epsilon.
        fused: fused AdamW; ``None`` picks it where available.
        grad_clip: clip the global gradient norm to this (``None`` or 0: no clipping).
        fused_grad_scale: apply the token-count scale and the clip factor as one ``grad_scale`` read by the
            fused AdamW step (the contract ``torch.amp.GradScaler`` uses; one or two passes over the
            gradients fewer than scaling and ``clip_grad_norm_``, which are the default). Needs ``fused``
            AdamW (not ``False``) and the ``ddp`` strategy.
        grad_accum: micro-batches per update (the loss is averaged over all their tokens).
        batch_split: cut each micro-batch into this many parts along its batch dimension and compute them at
            once on as many CPU threads, one intra-op thread each (data parallelism over the cores of one
            process; :mod:`qkv.training.split`). ``auto``: torch's intra-op thread count when training on the
            CPU in one process and the step draws no random numbers (no dropout), else 1. A number ``>= 2``
            asks for it and is an error where it cannot hold (not the CPU, torchrun, a step with dropout).
            The update is the same as unsplit (up to float rounding) and runs stay bit-exact.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``; resolved once on the training device by
            :func:`qkv.hardware.resolve_precision`: ``auto`` is bf16 where bf16 matmuls are native (CUDA with
            bf16, CPUs with AVX512-BF16 or AMX) and fp32 elsewhere. bf16/fp16 autocast the forward passes
            (weights and optimiser stay fp32); fp16 needs CUDA and scales the loss (``torch.amp.GradScaler``).
        compile: run the forward and loss through ``torch.compile``.
        attention_backend: restrict ``scaled_dot_product_attention`` to one backend during training and
            evaluation (``math``, ``flash``, ``efficient``, ``cudnn``); ``None`` lets torch choose. On CPU
            with bf16 and short blocks, ``math`` (plain matmuls) beats the fused flash kernel's backward;
            there qkv runs causal self-attention on its math path with a cached mask (``qkv.functional.attention``).
        eval_every: evaluate (and checkpoint) every this many updates; 0 only at the end.
        eval_batches: cap on evaluation batches (``None``: all).
        monitor: evaluation metric that picks the best checkpoint (``loss`` or a task metric key).
        mode: ``min`` or ``max`` for ``monitor``.
        patience: stop after this many evaluations without improvement (``None``: never).
        log_every: print/log training metrics every this many updates (the only host syncs; under torchrun the
            ranks also agree there whether a signal or the time limit stops the run).
        save_every: also checkpoint every this many updates (0: only at evaluations and the end).
        keep_last: step checkpoints kept in ``out_dir`` (the best one is kept as well).
        average_last: after training, average the last this many checkpoints into ``out_dir/averaged``.
        seed: seed of torch, numpy and ``random`` at the start of training.
        out_dir: run directory for checkpoints and metrics (``None``: keep nothing on disk).
        device: ``auto`` (GPU if present), ``cpu``, ``cuda``, ``cuda:1`` ...
        strategy: data parallelism under torchrun: ``ddp`` or ``fsdp``.
        progress: show a tqdm progress bar on rank 0.
        time_limit: stop (with a checkpoint) after this many seconds of training (``None``: no limit);
            the schedule still runs over ``steps`` unless ``fit_schedule`` is set.
        fit_schedule: with ``time_limit``, fit the schedule to the time: after ``plan_after`` updates the
            trainer times its updates (from update ``plan_after // 2`` on, so compilation and warm-up do not
            count) and plans the run over the updates that fit in the time left, keeping a tenth of it for
            evaluations and checkpoints (at most ``steps``; warm-up at most a fifth of them). The schedule
            (cosine: its decay to ``min_lr_ratio``) then ends where the run ends, so a slower machine gets a
            shorter but complete schedule instead of one cut off at a high learning rate. The plan is made
            once, from rank 0's clock, and saved in checkpoints: a resumed run continues the same plan, and
            everything after the plan is deterministic (bit-exact resume). The time limit still stops a run
            that the machine slows down past its plan.
        plan_after: updates timed before ``fit_schedule`` plans (keep it <= ``warmup`` so that the learning
            rates before the plan do not depend on it).
    """

    steps: int = 1000
    lr: float = 3e-4
    warmup: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    d_model: int | None = None
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    fused: bool | None = None
    grad_clip: float | None = 1.0
    fused_grad_scale: bool = False
    grad_accum: int = 1
    batch_split: int | str = 1
    precision: str = "auto"
    compile: bool = False
    attention_backend: str | None = None
    eval_every: int = 0
    eval_batches: int | None = None
    monitor: str = "loss"
    mode: str = "min"
    patience: int | None = None
    log_every: int = 10
    save_every: int = 0
    keep_last: int = 5
    average_last: int = 0
    seed: int = 0
    out_dir: str | None = None
    device: str = "auto"
    strategy: str = "ddp"
    progress: bool = True
    time_limit: float | None = None
    fit_schedule: bool = False
    plan_after: int = 20

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # from YAML/JSON lists
        if self.steps < 0 or self.warmup < 0:
            raise ValueError(f"steps ({self.steps}) and warmup ({self.warmup}) must be >= 0")
        if self.grad_accum < 1 or self.log_every < 1:
            raise ValueError(f"grad_accum ({self.grad_accum}) and log_every ({self.log_every}) must be >= 1")
        if self.batch_split != "auto" and (isinstance(self.batch_split, bool) or not isinstance(self.batch_split, int)
                                           or self.batch_split < 1):
            raise ValueError(f"batch_split must be 'auto' or an integer >= 1, got {self.batch_split!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.schedule == "inverse_sqrt" and not self.d_model:
            raise ValueError("schedule 'inverse_sqrt' needs d_model")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.attention_backend is not None and self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend {self.attention_backend!r} is not one of {ATTENTION_BACKENDS}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"strategy must be 'ddp' or 'fsdp', got {self.strategy!r}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ValueError(f"time_limit must be > 0 seconds or None, got {self.time_limit}")
        if self.fit_schedule and (self.time_limit is None or self.plan_after < 2):
            raise ValueError(f"fit_schedule needs a time_limit (got {self.time_limit}) and plan_after >= 2 "
                             f"(got {self.plan_after})")
        if self.fused_grad_scale and (self.fused is False or self.strategy != "ddp"):
            raise ValueError(f"fused_grad_scale needs fused AdamW and strategy 'ddp', got fused={self.fused}, "
                             f"strategy={self.strategy!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``betas`` as a list)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)
