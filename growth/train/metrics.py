"""What a run shows: TensorBoard scalars and a progress display on rank 0 (a tqdm bar on a terminal,
plain periodic lines in a log file), throughput, TFLOP/s and MFU."""

from __future__ import annotations

import re
import sys
import time
from collections import deque
from pathlib import Path

import torch
from tqdm import tqdm

# Dense (not 2:4-sparse) bf16 tensor-core peak per GPU (TFLOP/s), for MFU; NVIDIA's data sheets. A key
# matches a whole word of the device name, and the more specific names come first, so an "H100 PCIe"
# is not taken for an SXM H100, nor an "A10G" for an A10. CPUs have no reliable peak: no MFU there.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200 NVL": 835.0,
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "L4": 121.0,
}


def peak_tflops(device_name: str | None = None) -> float | None:
    """The dense bf16 peak of ``device_name`` (default: the current CUDA device), None if unknown."""
    if device_name is None:
        if not torch.cuda.is_available():
            return None
        device_name = torch.cuda.get_device_name()
    return next(
        (
            peak
            for key, peak in PEAK_BF16_TFLOPS.items()
            if re.search(rf"(?<![\w-]){re.escape(key)}(?![\w])", device_name)
        ),
        None,
    )


# The ETA extrapolates the mean of the last RECENT_STEPS step times: recent enough to follow a growth stage's
# slower steps, long enough to average over the evaluation and checkpoint steps.
RECENT_STEPS = 20
FENCE = "`" * 3  # a markdown code block


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 2h07m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def mfu(flops: float, seconds: float, peak: float | None, n_gpus: int = 1) -> float | None:
    """Model FLOPs utilisation: the training FLOPs done (``flops``: 6N + attention per token x tokens, all
    GPUs) per measured second, over the dense bf16 peak of the ``n_gpus`` that did them."""
    return None if not peak else flops / seconds / 1e12 / (peak * n_gpus)


class Metrics:
    def __init__(self, log_dir: Path, enabled: bool, max_steps: int, start_step: int, line_every: int = 10):
        self.enabled, self.max_steps, self.line_every = enabled, max_steps, line_every
        self.log_dir, self._writer = log_dir, None
        # A bar redrawn in place is one endless line in a log file: there, print a line now and then.
        self.interactive = enabled and sys.stderr.isatty()
        self.bar = tqdm(
            total=max_steps, initial=start_step, disable=not self.interactive, dynamic_ncols=True, unit="step"
        )
        self.peak = peak_tflops()
        self._last = time.perf_counter()
        self.recent: deque[float] = deque(maxlen=RECENT_STEPS)  # seconds of the last steps, for the ETA

    def step_seconds(self) -> float:
        """Seconds since the previous call (one optimizer step, including its data)."""
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        self.recent.append(elapsed)
        return elapsed

    def eta_seconds(self, step: int) -> float | None:
        """Time left for the steps after ``step`` at the recent step rate (None before any step)."""
        if not self.recent:
            return None
        return (self.max_steps - step) * sum(self.recent) / len(self.recent)

    def throughput(self, tokens: int, flops: float, seconds: float, world_size: int) -> dict[str, float]:
        out = {"perf/tokens_per_s": tokens / seconds, "perf/tflops": flops / seconds / 1e12}
        if self.peak:  # the step's FLOPs are every rank's: against world_size GPUs' peak
            out["perf/mfu"] = mfu(flops, seconds, self.peak, world_size)
        return out

    @property
    def writer(self):
        """TensorBoard's writer on rank 0, opened at the first write: a launch that logs nothing (a relaunch of a
        finished run) leaves no new events file in the run directory."""
        if self.enabled and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self.enabled:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)

    def progress(
        self, step: int, loss: float, tokens_per_s: float, stage: int | None = None, lr: float | None = None
    ) -> None:
        self.bar.update(step - self.bar.n)
        eta = self.eta_seconds(step)
        eta_text = format_duration(eta) if eta is not None else "?"
        shown = {"stage": stage} if stage is not None else {}
        shown.update(loss=f"{loss:.4f}", **({"lr": f"{lr:.2e}"} if lr is not None else {}))
        self.bar.set_postfix(**shown, tok_s=f"{tokens_per_s:,.0f}", eta=eta_text)
        if self.enabled and not self.interactive and (step % self.line_every == 0 or step == self.max_steps):
            stage_text = f" | stage {stage}" if stage is not None else ""
            lr_text = f" | lr {lr:.2e}" if lr is not None else ""
            self.say(
                f"step {step}/{self.max_steps}{stage_text} | loss {loss:.4f}{lr_text} | "
                f"{tokens_per_s / 1e3:.1f}k tok/s | ETA {eta_text}"
            )

    def text(self, tag: str, text: str, step: int) -> None:
        """A text in TensorBoard's text tab, as a markdown code block (lines and spaces kept as written)."""
        if self.enabled:
            self.writer.add_text(tag, FENCE + "\n" + text.replace(FENCE, "'" * 3) + "\n" + FENCE, step)

    def say(self, line: str) -> None:
        """A line on rank 0's stdout that does not tear the progress bar."""
        if self.enabled:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()

    def close(self) -> None:
        self.bar.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
