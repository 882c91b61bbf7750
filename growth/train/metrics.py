"""What a run shows: TensorBoard scalars and a tqdm bar on rank 0, throughput, TFLOP/s and MFU."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

# Dense bf16 tensor-core peak per GPU (TFLOP/s), for MFU. CPUs have no reliable peak: no MFU there.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


class Metrics:
    def __init__(self, log_dir: Path, enabled: bool, max_steps: int, start_step: int):
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))
        self.bar = tqdm(total=max_steps, initial=start_step, disable=not enabled, dynamic_ncols=True, unit="step")
        self.peak = peak_tflops()
        self._last = time.perf_counter()

    def step_seconds(self) -> float:
        """Seconds since the previous call (one optimizer step, including its data)."""
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return elapsed

    def throughput(self, tokens: int, flops: float, seconds: float, world_size: int) -> dict[str, float]:
        out = {"perf/tokens_per_s": tokens / seconds, "perf/tflops": flops / seconds / 1e12}
        if self.peak:
            out["perf/mfu"] = out["perf/tflops"] / (self.peak * world_size)
        return out

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)

    def progress(self, step: int, loss: float, tokens_per_s: float, stage: int | None = None) -> None:
        self.bar.update(step - self.bar.n)
        shown = {"stage": stage} if stage is not None else {}
        self.bar.set_postfix(**shown, loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
