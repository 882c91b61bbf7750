"""Running the trainer's real path from a benchmark (one ``launch/pretrain.py`` process) and reading its
curve back; and expanding a ~1B-parameter checkpoint on CPU (time and peak memory). The growth-vs-scratch
protocol itself is ``growth/bench/growth_protocol/``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[2]


def train(out_dir: Path, overrides: list[str], config: Path | None = None) -> float:
    """``python launch/pretrain.py`` (one process); returns its wall seconds."""
    cmd = [sys.executable, str(ROOT / "launch/pretrain.py"), *(["--config", str(config)] if config else []),
           f"train.out_dir={out_dir}", "train.resume=none", *overrides]
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def curve(out_dir: Path) -> list[dict[str, float]]:
    """(step, FLOPs seen, val loss, seconds since the run's first event) at every evaluation."""
    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    flops = {s.step: s.value for s in events.Scalars("train/flops_seen")}
    start = min(s.wall_time for s in events.Scalars("train/loss"))
    return [{"step": s.step, "flops": flops[s.step], "val_loss": s.value, "seconds": s.wall_time - start}
            for s in events.Scalars("val/loss") if s.step in flops]


def expand_one_billion(work: Path) -> dict:
    """Build a ~0.27B checkpoint (random weights), grow it 2x in width to ~1B in a fresh process, and
    read that process's peak RSS against the size of what it wrote."""
    source, out = work / "src1b", work / "grown1b"
    small = {"vocab_size": 32000, "d_model": 1024, "n_layers": 16, "n_heads": 16, "head_dim": 64, "d_ff": 2816,
             "max_seq_len": 256}
    large = {**small, "d_model": 2048, "n_heads": 32, "d_ff": 5632}
    make = (f"import torch,yaml; from pathlib import Path; from safetensors.torch import save_file; "
            f"from growth.config import load_config; from growth.model import build_model; "
            f"c=load_config(overrides={[f'model.{k}={v}' for k, v in small.items()]!r}); p=Path({str(source)!r}); "
            f"p.mkdir(parents=True); save_file({{k: v.contiguous() for k, v in build_model(c.model).state_dict().items()}}, "
            f"str(p/'model.safetensors')); c.save(p/'config.yaml')")
    subprocess.run([sys.executable, "-c", make], check=True, cwd=ROOT)
    (work / "large1b.yaml").write_text(yaml.safe_dump({"model": large}))
    grow = (f"import json,resource,time; from pathlib import Path; from growth.expand.grow_checkpoint import expand_checkpoint; "
            f"t=time.perf_counter(); r=expand_checkpoint(Path({str(source)!r}), Path({str(work / 'large1b.yaml')!r}), "
            f"Path({str(out)!r}), noise_std=1e-3); "
            f"print(json.dumps({{'seconds': time.perf_counter()-t, 'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024, "
            f"'params_before': r['params_before'], 'params_after': r['params_after'], 'max_abs_logit_diff': r['max_abs_logit_diff']}}))")
    result = subprocess.run([sys.executable, "-c", grow], check=True, cwd=ROOT, capture_output=True, text=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["output_bytes"] = (out / "model.safetensors").stat().st_size
    figures["peak_rss_over_output"] = figures["peak_rss_bytes"] / figures["output_bytes"]
    return figures
