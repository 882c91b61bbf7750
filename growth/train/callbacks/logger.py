"""TensorBoard scalars and a tqdm bar on rank 0: train/loss, lr, grad norm, tokens and FLOPs seen,
throughput (``growth/train/metrics.py``), and whatever else reports through ``trainer.log``."""

from __future__ import annotations

from pathlib import Path

from growth.train.callback import Callback
from growth.train.metrics import Metrics


class TensorBoardLogger(Callback):
    priority = 90  # the first that reports: it opens the writer in pre_train, before the others log

    def __init__(self, log_dir: Path, log_interval: int, show_stage: bool = False):
        self.log_dir, self.log_interval, self.show_stage = log_dir, log_interval, show_stage
        self.metrics: Metrics | None = None

    def pre_train(self, trainer) -> None:
        self.metrics = Metrics(
            self.log_dir,
            trainer.world.is_main,
            trainer.max_steps,
            trainer.state.step,
            line_every=self.log_interval,
        )
        self.metrics.step_seconds()
        self.tokens_per_s = 0.0

    def log_metrics(self, trainer, step: int, scalars: dict[str, float]) -> None:
        if self.metrics is not None:
            self.metrics.log(step, scalars)

    def log_text(self, trainer, step: int, texts: dict[str, str], line: str) -> None:
        """TensorBoard's text tab (one entry per tag) and the console."""
        if self.metrics is None:
            return
        for tag, text in texts.items():
            self.metrics.text(tag, text, step)
        self.metrics.say(line)

    def post_step(self, trainer, result) -> None:
        step = trainer.state.step
        if not result.applied:
            trainer.log(step, {"train/skipped_steps": trainer.state.skipped_steps})
            return
        seconds = self.metrics.step_seconds()
        perf = self.metrics.throughput(result.tokens, result.flops, seconds, trainer.world.size)
        self.tokens_per_s = perf["perf/tokens_per_s"]
        grown = sum("stage" in event for event in trainer.state.growth_events)
        self.metrics.progress(
            step,
            result.loss,
            perf["perf/tokens_per_s"],
            stage=grown if self.show_stage else None,
            lr=trainer.engine.get_lr()[0],
        )
        if step % self.log_interval == 0 or step == 1:
            grad_norm = trainer.engine.get_global_grad_norm()
            trainer.log(
                step,
                {
                    "train/loss": result.loss,
                    "train/lr": trainer.engine.get_lr()[0],
                    "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    "train/tokens_seen": trainer.state.tokens_seen,
                    "train/flops_seen": trainer.state.flops_seen,
                    "model/params": trainer.engine.module.num_params(),
                    **perf,
                },
            )

    def post_eval(self, trainer, scalars: dict[str, float]) -> None:
        """One console line per evaluation: ``step 200 | val loss 4.21 | val loss (EMA) 4.18 | 14.7k tok/s``."""
        parts = [f"step {trainer.state.step}"]
        for name, value in scalars.items():
            label = name.removeprefix("val/").replace("_", " ")
            label = f"{label[:-4]} (EMA)" if label.endswith(" ema") else label
            parts.append(f"val {label} {value:.4f}")
        self.metrics.say(" | ".join([*parts, f"{self.tokens_per_s / 1e3:.1f}k tok/s"]))

    def post_train(self, trainer) -> None:
        self.close()

    def on_error(self, trainer, error: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
