"""Does growth save compute? Train small -> grow -> continue, against the large model from scratch on the
same data order; report the FLOPs (and wall time) each path needs to reach the scratch run's final
validation loss. Also: expanding a ~1B-parameter checkpoint on CPU, its time and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"d_model": 64, "n_layers": 3, "n_heads": 2, "head_dim": 32, "d_ff": 192}
LARGE = {"d_model": 128, "n_layers": 6, "n_heads": 4, "head_dim": 32, "d_ff": 384}


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


def model_overrides(shape: dict[str, int]) -> list[str]:
    return [f"model.{k}={v}" for k, v in shape.items()]


def first_reaching(points: list[dict[str, float]], target: float) -> dict[str, float] | None:
    return next((p for p in points if p["val_loss"] <= target), None)


def growth_vs_scratch(work: Path, small_steps: int, large_steps: int, continue_steps: int, eval_every: int,
                      continue_overrides: tuple[str, ...] = ()) -> dict:
    from growth.expand.grow_checkpoint import expand_checkpoint

    common = [f"train.eval_interval={eval_every}", f"train.log_interval={eval_every}",
              f"train.save_interval={max(small_steps, large_steps, continue_steps)}", "train.eval_batches=16"]
    scratch_seconds = train(work / "scratch", [*model_overrides(LARGE), f"train.max_steps={large_steps}", *common])
    small_seconds = train(work / "small", [*model_overrides(SMALL), f"train.max_steps={small_steps}", *common])
    target = work / "large.yaml"
    target.write_text(yaml.safe_dump({"model": {**yaml.safe_load((work / "small/config.yaml").read_text())["model"],
                                                **LARGE}}))
    started = time.perf_counter()
    report = expand_checkpoint(work / "small", target, work / "grown", noise_std=1e-3, seed=0)
    expand_seconds = time.perf_counter() - started
    grown_seconds = train(work / "continued", [f"train.max_steps={continue_steps}", *common, *continue_overrides],
                          config=work / "grown/config.yaml")

    scratch, small, continued = curve(work / "scratch"), curve(work / "small"), curve(work / "continued")
    goal = scratch[-1]["val_loss"]
    reached = first_reaching(continued, goal)
    small_total = small[-1]["seconds"]
    result = {
        "small": SMALL, "large": LARGE, "steps": {"small": small_steps, "large": large_steps, "continue": continue_steps},
        "continue_overrides": list(continue_overrides),
        "target_val_loss": goal,
        "scratch": {"flops": scratch[-1]["flops"], "seconds": scratch[-1]["seconds"], "curve": scratch,
                    "process_seconds": scratch_seconds},
        "grown": {"curve_small": small, "curve_large": continued, "expand_logit_diff": report["max_abs_logit_diff"],
                  "expand_seconds": expand_seconds, "process_seconds": small_seconds + grown_seconds},
    }
    if reached:
        result["grown"].update(flops=reached["flops"], seconds=small_total + expand_seconds + reached["seconds"])
        result["flops_ratio"] = reached["flops"] / scratch[-1]["flops"]
        result["time_ratio"] = result["grown"]["seconds"] / scratch[-1]["seconds"]
    return result


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
