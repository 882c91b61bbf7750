"""Expanding a ~1B-parameter checkpoint on CPU: the time and the peak memory of ``tools/expand.py``'s
function against the size of what it writes (``tools/bench_growth.py --expand-1b``)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from growth.bench.harness import run_command, run_python


def expand_one_billion(work: Path) -> dict:
    """Build a ~0.27B checkpoint (random weights), grow it 2x in width to ~1B in a fresh process, and
    read that process's peak RSS against the size of what it wrote."""
    source, out = work / "src1b", work / "grown1b"
    small = {
        "vocab_size": 32000,
        "d_model": 1024,
        "n_layers": 16,
        "n_heads": 16,
        "head_dim": 64,
        "d_ff": 2816,
        "max_seq_len": 256,
    }
    large = {**small, "d_model": 2048, "n_heads": 32, "d_ff": 5632}
    make = (
        f"import torch,yaml; from pathlib import Path; from safetensors.torch import save_file; "
        f"from growth.config import load_config; from growth.model import build_model; "
        f"c=load_config(overrides={[f'model.{k}={v}' for k, v in small.items()]!r}); p=Path({str(source)!r}); "
        f"p.mkdir(parents=True); save_file({{k: v.contiguous() for k, v in build_model(c.model).state_dict().items()}}, "
        f"str(p/'model.safetensors')); c.save(p/'config.yaml')"
    )
    run_command([sys.executable, "-c", make])
    (work / "large1b.yaml").write_text(yaml.safe_dump({"model": large}))
    grow = (
        f"import json,resource,time; from pathlib import Path; from growth.expand.grow_checkpoint import expand_checkpoint; "
        f"t=time.perf_counter(); r=expand_checkpoint(Path({str(source)!r}), Path({str(work / 'large1b.yaml')!r}), "
        f"Path({str(out)!r}), noise_std=1e-3); "
        f"print(json.dumps({{'seconds': time.perf_counter()-t, 'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024, "
        f"'params_before': r['params_before'], 'params_after': r['params_after'], 'max_abs_logit_diff': r['max_abs_logit_diff']}}))"
    )
    figures = run_python(["-c", grow])
    figures["output_bytes"] = (out / "model.safetensors").stat().st_size
    figures["peak_rss_over_output"] = figures["peak_rss_bytes"] / figures["output_bytes"]
    return figures
