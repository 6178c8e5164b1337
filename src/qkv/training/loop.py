"""The training loop: accumulation, clipping, autocast, compile, evaluation, checkpoints, signals.

A *loss function* ``loss_fn(model, batch) -> (loss, n_tokens)`` returns the mean loss over the
batch's counted tokens and their number (a tensor or int). The trainer weights each micro-batch by its
token count, so an update's loss is the mean over all tokens of its micro-batches (and of all ranks):
gradient accumulation and data parallelism give the same update as one big batch.

Only ``log_every`` steps and evaluations read values back to the host; in between, losses, token counts
and gradient norms stay on the device.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.attention import sdpa_kernel

from qkv.functional._tracing import compile_cache_tag
from qkv.hardware import resolve_precision
from qkv.training import checkpoint as ckpt
from qkv.training.average import average_last, list_checkpoints, prune_checkpoints
from qkv.training.config import TrainConfig
from qkv.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    gather_full_state,
    load_full_state,
    wrap_model,
)
from qkv.training.metrics import MetricsWriter, perplexity
from qkv.training.optim import build_optimizer, build_scheduler, schedule_fn
from qkv.training.plan import StepTimer, steps_that_fit
from qkv.training.progress import metrics_line, projected_end, say, train_line
from qkv.training.rundir import run_lock
from qkv.training.runtime import (
    SDPA_BACKENDS,
    LossFn,
    LossModule,
    accepts_skip,
    resolve_device,
    seed_everything,
    to_device,
)
from qkv.training.split import BatchSplit

MetricFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did."""

    step: int
    best: float | None = None
    best_path: Path | None = None
    last_path: Path | None = None
    averaged_path: Path | None = None
    stopped_early: bool = False
    interrupted: bool = False
    signal: int | None = None
    timed_out: bool = False
    evals: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Trains ``model`` on ``train_data`` with ``loss_fn``; see :class:`TrainConfig` for the knobs.

    Args:
        model: the network (moved to the configured device).
        loss_fn: ``loss_fn(model, batch) -> (mean loss, n_tokens)``.
        train_data: re-iterable batches (one pass = one epoch; ``set_epoch(e)`` is called if present).
            For bit-exact resumption the order must depend only on the epoch (a seeded shuffle).
        config: the settings.
        eval_data: batches for evaluation (loss, perplexity).
        eval_loss_fn: loss for evaluation (default ``loss_fn``; pass one without label smoothing for
            a true perplexity).
        metric_fn: ``metric_fn(model) -> {name: value}``, the task metric, called at each evaluation.
        model_config: saved as ``config.json`` in checkpoints (a dataclass with ``to_dict()``).
        tokenizer: saved into checkpoints through ``tokenizer.save(folder)``.
        dist: the process's place in a torchrun job (default: single process).

    Attributes:
        precision: the precision the run uses, ``config.precision`` resolved once on the training device
            (``"fp32"`` or ``"bf16"``; see :func:`qkv.hardware.resolve_precision`); saved in checkpoints and
            written to the metrics as the ``run`` record.
        planned_steps: the run's length as planned by ``config.fit_schedule`` (``None`` before the plan, or
            without it); :attr:`total_steps` is the length in force.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: Iterable[Any],
        config: TrainConfig,
        *,
        eval_data: Iterable[Any] | None = None,
        eval_loss_fn: LossFn | None = None,
        metric_fn: MetricFn | None = None,
        model_config: Any = None,
        tokenizer: Any = None,
        dist: DistInfo | None = None,
    ) -> None:
        self.config = config
        self.dist = dist or DistInfo(device=resolve_device(config.device))
        self.device = self.dist.device
        self.precision = resolve_precision(config.precision, self.device)
        if self.precision == "fp16":
            raise ValueError("precision 'fp16' is not supported by the Trainer (it has no loss scaling); "
                             "use auto or bf16")
        seed_everything(config.seed)
        self.model = model.to(self.device)
        self.loss_fn, self.eval_loss_fn = loss_fn, eval_loss_fn or loss_fn
        self.train_data, self.eval_data, self.metric_fn = train_data, eval_data, metric_fn
        self.model_config, self.tokenizer = model_config, tokenizer
        self.step_module = wrap_model(LossModule(self.model, loss_fn), self.dist, config.strategy)
        if config.compile:
            self.step_module = torch.compile(self.step_module)
        # The parameters as wrapping left them; read every step (a module walk per step costs more than the clip).
        self._params = list(self.model.parameters())
        self.optimizer = build_optimizer(
            self.model, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas,
            eps=config.eps, fused=config.fused,
        )
        self.scheduler = build_scheduler(self.optimizer, self._schedule(config.steps))
        threads = self._resolve_split()
        self._split = (BatchSplit(threads, self.step_module, self._params, self._autocast)
                       if threads > 1 else None)
        self._split_probed = False
        self.planned_steps: int | None = None
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        self._timer = StepTimer(config.plan_after, sync)
        self.out_dir = Path(config.out_dir) if config.out_dir else None
        self.writer = MetricsWriter(self.out_dir if self.dist.is_main else None)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best: float | None = None
        self.bad_evals = 0
        self._iter: Iterator[Any] | None = None
        self._stop_signal: int | None = None
        self._deadline: float | None = None
        self._timed_out = False

    # ------------------------------------------------------------------------------------ schedule
    def _schedule(self, total: int) -> Callable[[int], float]:
        cfg = self.config
        warmup = cfg.warmup if total == cfg.steps else min(cfg.warmup, max(1, total // 5))
        return schedule_fn(cfg.schedule, warmup=warmup, total=total, d_model=cfg.d_model, min_ratio=cfg.min_lr_ratio)

    @property
    def total_steps(self) -> int:
        """The run's length: the planned steps once ``fit_schedule`` has planned, else ``config.steps``."""
        return self.config.steps if self.planned_steps is None else self.planned_steps

    def plan(self, steps: int) -> None:
        """Run ``steps`` updates in all, with the schedule planned over them (what ``fit_schedule`` does).

        Args:
            steps: the planned length, in ``[1, config.steps]``; its warm-up is at most a fifth of it.
        """
        if not 1 <= steps <= self.config.steps:
            raise ValueError(f"planned steps ({steps}) must be in [1, steps={self.config.steps}]")
        self.planned_steps = steps
        fn = self._schedule(steps)
        self.scheduler.lr_lambdas = [fn] * len(self.optimizer.param_groups)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * fn(self.scheduler.last_epoch)  # the next update already follows the plan

    def _maybe_plan(self) -> None:
        """``fit_schedule``: once this ``fit`` call has timed its first updates, plan the run (rank 0's plan)."""
        if not self.config.fit_schedule or self.planned_steps is not None or self._deadline is None:
            return
        per_step = self._timer.seconds_per_step(self.step)
        if per_step is None:
            return
        steps = steps_that_fit(self._deadline - time.perf_counter(), per_step, done=self.step, most=self.config.steps)
        if self.dist.enabled:
            steps = int(all_reduce_sum(torch.tensor(float(steps if self.dist.is_main else 0),
                                                    device=self.device)).item())
        self.plan(steps)
        self.writer.write("plan", self.step, {"planned_steps": steps, "seconds_per_step": per_step})

    def _resolve_split(self) -> int:
        """``config.batch_split`` as a number of threads (``auto``: torch's intra-op threads on a CPU)."""
        asked = self.config.batch_split
        possible = self.device.type == "cpu" and not self.dist.enabled
        if asked == "auto":
            return torch.get_num_threads() if possible else 1
        if asked > 1 and not possible:
            raise ValueError(f"batch_split={asked} splits batches over CPU threads in one process; this run trains "
                             f"on {self.device} with {self.dist.world_size} process(es): use batch_split 1 or auto")
        return asked

    def _splitter(self, batch: Any) -> BatchSplit | None:
        """The batch split, once probed on the run's first batch: a step that draws random numbers (dropout)
        cannot be split deterministically (``auto`` then trains unsplit; an explicit number is an error)."""
        if self._split is not None and not self._split_probed:
            self._split_probed = True
            if self._split.draws_random(batch):
                if self.config.batch_split != "auto":
                    raise ValueError(f"batch_split={self.config.batch_split}: the training step draws random "
                                     "numbers (dropout), which threads cannot draw in a fixed order; use "
                                     "batch_split 1 or auto, or dropout 0")
                self._split.close()
                self._split = None
        return self._split

    @property
    def batch_split(self) -> int:
        """Threads (and parts) each micro-batch is split over; 1 when not split (see ``config.batch_split``)."""
        return 1 if self._split is None else self._split.n

    # ------------------------------------------------------------------------------------ data
    def _next_batch(self) -> Any:
        for _ in range(2):
            if self._iter is None:
                if hasattr(self.train_data, "set_epoch"):
                    self.train_data.set_epoch(self.epoch)
                self._iter = iter(self.train_data)
            try:
                batch = next(self._iter)
                self.batch_in_epoch += 1
                return to_device(batch, self.device)
            except StopIteration:
                self._iter, self.batch_in_epoch = None, 0
                self.epoch += 1
        raise ValueError(f"train_data yielded no batches in epoch {self.epoch - 1}")

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        """bf16 autocast (if the run's precision is bf16) and the attention backend, around forward passes."""
        enabled = self.precision == "bf16"
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled))
            if self.config.attention_backend is not None:
                stack.enter_context(sdpa_kernel([SDPA_BACKENDS[self.config.attention_backend]]))
            yield

    # ------------------------------------------------------------------------------------ step
    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One update over ``grad_accum`` micro-batches.

        Returns:
            ``(loss_sum, n_tokens, grad_norm)`` as device tensors (this rank's loss sum, global count).
        """
        loss_sum = torch.zeros((), device=self.device)
        n_sum = torch.zeros((), device=self.device)
        ddp = isinstance(self.step_module, nn.parallel.DistributedDataParallel)
        for i in range(self.config.grad_accum):
            batch = self._next_batch()
            split = self._splitter(batch)
            if split is not None:  # the parts at once on CPU threads (no DDP here)
                loss_n, n = split.accumulate(batch)
                loss_sum += loss_n
                n_sum += n
                continue
            last = i == self.config.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not ddp) else self.step_module.no_sync()
            with sync:
                with self._autocast():
                    loss, n = self.step_module(batch)
                n = torch.as_tensor(n, device=self.device, dtype=torch.float32)
                (loss.float() * n).backward()
            loss_sum += loss.detach().float() * n
            n_sum += n
        global_n = all_reduce_sum(n_sum.clone())
        # DDP averaged the token-weighted sums over ranks; undo that and divide by all tokens.
        scale = self.dist.world_size / global_n.clamp(min=1)
        norm = self._scale_and_clip(scale)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_sum, global_n, norm

    def _scale_and_clip(self, scale: torch.Tensor) -> torch.Tensor | None:
        """Multiply the gradients by ``scale`` and clip them to ``grad_clip``; returns the scaled norm.

        Default: one multiply over the gradients, then ``torch.nn.utils.clip_grad_norm_`` (which also
        reduces the norm of FSDP's sharded gradients across ranks). With ``fused_grad_scale`` the factor
        ``scale`` times the clip coefficient (``clip_grad_norm_``'s) is handed to the fused AdamW step as
        ``grad_scale``, which divides each gradient by it as it reads it (the contract ``GradScaler`` uses):
        the same update without the passes of the multiply and the clip.
        """
        grads = [p.grad for p in self._params if p.grad is not None]
        clip = self.config.grad_clip
        if not self.config.fused_grad_scale:
            torch._foreach_mul_(grads, scale)
            return torch.nn.utils.clip_grad_norm_(self._params, clip) if clip else None
        if not getattr(self.optimizer, "_step_supports_amp_scaling", False):
            raise ValueError(f"fused_grad_scale needs an optimizer that reads grad_scale (fused AdamW), got "
                             f"{type(self.optimizer).__name__} with fused={self.optimizer.defaults.get('fused')}")
        factor, norm = scale, None
        if clip and grads:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) * scale
            factor = scale * (clip / (norm + 1e-6)).clamp(max=1.0)
        self.optimizer.grad_scale = 1.0 / factor
        return norm

    # ------------------------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss and perplexity over ``eval_data`` (summed over ranks) plus ``metric_fn``'s values."""
        if self.eval_data is None and self.metric_fn is None:
            return {}
        with self._unsharded(), self._split.paused() if self._split is not None else contextlib.nullcontext():
            return self._evaluate()

    @contextlib.contextmanager
    def _unsharded(self) -> Iterator[None]:
        """Under FSDP, gather the full parameters so ``self.model`` can be called directly."""
        root = getattr(self.step_module, "_orig_mod", self.step_module)
        if not hasattr(root, "unshard"):
            yield
            return
        root.unshard()
        try:
            yield
        finally:
            root.reshard()

    def _evaluate(self) -> dict[str, float]:
        # Evaluation never moves training's random streams (a DataLoader draws a seed from the global generator
        # per pass; a sampling metric draws more): with or without eval_every the weights come out the same.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return self._evaluate_now()

    def _evaluate_now(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        out: dict[str, float] = {}
        if self.eval_data is not None:
            total = torch.zeros(2, dtype=torch.float64, device=self.device)
            for i, batch in enumerate(self.eval_data):
                if self.config.eval_batches is not None and i >= self.config.eval_batches:
                    break
                with self._autocast():
                    loss, n = self.eval_loss_fn(self.model, to_device(batch, self.device))
                n = torch.as_tensor(n, device=self.device, dtype=torch.float64)
                total += torch.stack([loss.double() * n, n])
            loss_sum, n = all_reduce_sum(total).tolist()
            if n == 0:
                raise ValueError("eval_data holds no tokens to evaluate on")
            out = {"loss": loss_sum / n, "ppl": perplexity(loss_sum / n), "tokens": n}
        if self.metric_fn is not None:
            out.update({k: float(v) for k, v in self.metric_fn(self.model).items()})
        self.model.train(was_training)
        return out

    def _improved(self, metrics: dict[str, float]) -> bool:
        if self.config.monitor not in metrics:
            raise KeyError(f"monitor {self.config.monitor!r} not among evaluation metrics {sorted(metrics)}")
        value = metrics[self.config.monitor]
        better = self.best is None or (value < self.best if self.config.mode == "min" else value > self.best)
        if better:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return better

    # ------------------------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """JSON-able trainer state saved in checkpoints."""
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best": self.best, "bad_evals": self.bad_evals, "config": self.config.to_dict(),
            "precision": self.precision, "planned_steps": self.planned_steps,
        }

    def save(self, name: str | None = None, *, best: bool = False) -> Path | None:
        """Checkpoint to ``out_dir/<name>`` (default ``step_<step>``) on rank 0 and point ``latest`` at it."""
        if self.out_dir is None:
            return None
        path = self.out_dir / (name or f"step_{self.step:08d}")
        fsdp = self.dist.enabled and self.config.strategy == "fsdp"
        # A collective under FSDP: every rank takes part, rank 0 gets the full tensors.
        weights, optimizer_state = gather_full_state(self.model, self.optimizer) if fsdp else (None, None)
        if self.dist.is_main:
            ckpt.save_checkpoint(
                path, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                trainer_state=self.state(), model_config=self.model_config, tokenizer=self.tokenizer,
                weights=weights, optimizer_state=optimizer_state,
            )
            ckpt.point(self.out_dir, "latest", path)
            if best:
                ckpt.point(self.out_dir, "best", path)
            prune_checkpoints(self.out_dir, self.config.keep_last)
        barrier()
        return path

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, data position and RNG states."""
        if self.dist.enabled and self.config.strategy == "fsdp":  # full state on every rank, then re-sharded
            folder = ckpt.resolve(path)
            load_full_state(self.model, self.optimizer, ckpt.read_tensors(folder / ckpt.WEIGHTS),
                            ckpt.read_optimizer_state(folder))
            loaded = ckpt.load_checkpoint(folder, scheduler=self.scheduler)
        else:
            loaded = ckpt.load_checkpoint(path, self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        st = loaded.trainer_state
        self.step, self.epoch, self.best, self.bad_evals = st["step"], st["epoch"], st["best"], st["bad_evals"]
        if st.get("planned_steps") is not None:
            self.plan(st["planned_steps"])
        self._iter, self.batch_in_epoch = None, 0
        skip = st["batch_in_epoch"]
        if skip and accepts_skip(self.train_data):  # qkv loaders start mid-epoch without reading
            self.train_data.set_epoch(self.epoch, skip=skip)
            self._iter, self.batch_in_epoch = iter(self.train_data), skip
        else:
            for _ in range(skip):  # replay the data order up to where the checkpoint was taken
                self._next_batch()
        ckpt.load_checkpoint(loaded.path, restore_rng=True)  # after the replay, which may draw numbers

    # ------------------------------------------------------------------------------------ fit
    def fit(self, until: int | None = None) -> TrainResult:
        """Train to :attr:`total_steps`, or early stop, or SIGINT/SIGTERM (checkpoint, then return).

        Args:
            until: stop (with a checkpoint) once this step is reached, before the end; the schedule still
                runs over :attr:`total_steps`, so a later :meth:`resume` continues the run.

        Returns:
            What happened, with the paths of the last, best and averaged checkpoints.

        Raises:
            RunDirError: another process is training into ``out_dir`` (its lock is held for the whole fit).
        """
        locked = self.out_dir is not None and self.dist.is_main
        with run_lock(self.out_dir) if locked else contextlib.nullcontext():
            return self._fit(until)

    def _fit(self, until: int | None) -> TrainResult:
        result = TrainResult(step=self.step)
        self._timer.begin(self.step)
        self._deadline = None if self.config.time_limit is None else time.perf_counter() + self.config.time_limit
        if not any(r["split"] == "run" for r in self.writer.records):  # once per Trainer
            self.writer.write("run", self.step, {"precision": self.precision, "requested": self.config.precision,
                                                 "device": str(self.device)})
        with self._signals(), self._progress() as bar, self._split or contextlib.nullcontext(), compile_cache_tag():
            self._loop(result, bar, self.total_steps if until is None else until)
        result.step, result.best = self.step, self.best
        if self.out_dir is not None and (self.out_dir / "best").exists():
            result.best_path = (self.out_dir / "best").resolve()
        finished = not result.interrupted and (result.stopped_early or self.step >= self.total_steps
                                               or self._timed_out)
        if self.config.average_last and self.out_dir is not None and finished:
            # A run cut short by its time limit may hold fewer checkpoints than asked for: average those.
            k = min(self.config.average_last, len(list_checkpoints(self.out_dir)))
            if self.dist.is_main and k >= 2:
                result.averaged_path = average_last(self.out_dir, k)
            barrier()
        self.writer.close()
        return result

    def _loop(self, result: TrainResult, bar: Any, until: int) -> None:
        cfg = self.config
        loss_acc = torch.zeros((), device=self.device)
        n_acc = torch.zeros((), device=self.device)
        t0 = time.perf_counter()
        started = (self.step, t0)
        while self.step < min(until, self.total_steps):
            loss_sum, n, norm = self.train_step()
            loss_acc += loss_sum
            n_acc += n
            self._maybe_plan()
            bar.total = projected_end(self.step, self.total_steps, started=started, now=time.perf_counter(),
                                      deadline=self._deadline)  # so the bar's ETA respects the time limit
            bar.update(1)
            stop = self._should_stop() or self.step >= min(until, self.total_steps)
            if self.step % cfg.log_every == 0 or stop:
                t0 = self._log(loss_acc, n_acc, norm, t0, bar)
                loss_acc.zero_(), n_acc.zero_()
            # Running out of time ends the run like reaching its planned steps: a final evaluation (so the best
            # checkpoint covers the last model) and checkpoint averaging. A signal only saves.
            saved, early = self._evaluate_and_save(result, final=stop and self._timed_out)
            if early:
                result.stopped_early = True
                return
            if stop:
                result.interrupted, result.signal = self._stop_signal is not None, self._stop_signal
                result.timed_out = self._timed_out
                if not saved:
                    result.last_path = self.save()
                return

    def _evaluate_and_save(self, result: TrainResult, *, final: bool = False) -> tuple[bool, bool]:
        """Evaluate/checkpoint when due (or ``final``); returns ``(saved, patience exhausted)``."""
        cfg = self.config
        at_end = self.step == self.total_steps or final
        if (cfg.eval_every and self.step % cfg.eval_every == 0) or at_end:
            metrics = self.evaluate()
            if metrics:
                result.evals.append(metrics)
                self.writer.write("eval", self.step, metrics)
                if self.dist.is_main:
                    say(metrics_line(self.step, metrics))
                improved = self._improved(metrics)
                result.last_path = self.save(best=improved)
                return True, cfg.patience is not None and self.bad_evals >= cfg.patience
        if (cfg.save_every and self.step % cfg.save_every == 0) or at_end:
            result.last_path = self.save()
            return True, False
        return False, False

    def _log(self, loss_acc: torch.Tensor, n_acc: torch.Tensor, norm: torch.Tensor | None,
             t0: float, bar: Any) -> float:
        loss_local = all_reduce_sum(loss_acc.clone())  # the only host syncs of the hot path
        n = n_acc.item()
        now = time.perf_counter()
        values = {
            "loss": loss_local.item() / max(n, 1.0),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": n / max(now - t0, 1e-9),
            "grad_norm": float(norm) if norm is not None else math.nan,
            "epoch": self.epoch,
        }
        self.writer.write("train", self.step, values)
        if bar.disable and self.dist.is_main:  # no bar to show them: a line per log_every updates
            say(train_line(self.step, values))
        bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}",
                        tok_s=f"{values['tokens_per_s']:.0f}", refresh=False)
        return now

    def _should_stop(self) -> bool:
        """Stop now? Sets ``_timed_out`` when the time limit (and no signal) is the reason, on every rank.

        Under torchrun the ranks agree through an all-reduce, a host sync, so they only ask at logging steps
        (every ``log_every`` updates, where ``_log`` syncs anyway) and all stop at the same step.
        """
        signal = self._stop_signal is not None
        out_of_time = self._deadline is not None and time.perf_counter() > self._deadline
        if self.dist.enabled:
            if self.step % self.config.log_every:
                return False
            flags = all_reduce_sum(torch.tensor([float(signal), float(out_of_time)], device=self.device)).tolist()
            signal, out_of_time = flags[0] > 0, flags[1] > 0
        self._timed_out = out_of_time and not signal
        return signal or out_of_time

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:  # second signal: give up at once
                raise KeyboardInterrupt
            self._stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Any]:
        from tqdm.auto import tqdm

        disable = not (self.config.progress and self.dist.is_main)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=disable, unit="step", dynamic_ncols=True)
        try:
            yield bar
        finally:
            bar.close()
