#!/usr/bin/env python
"""Training-step throughput: growth vs HF Llama of the same shape, and attention vs GAU vs FLASH
across sequence lengths. Writes <out>/bench_model.json (and bench_model.png with matplotlib).

    python tools/bench_model.py --quick          # smoke run, < 1 min on 2 cores
    python tools/bench_model.py --threads 2      # full run, a few minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
from pathlib import Path

# Read by libgomp when torch loads. On a busy machine, spinning OpenMP workers that lose their core
# stall every parallel op (2-thread steps measured 10-20x slower); passive workers sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from growth.bench.throughput import compare_with_llama, layer_kinds, seq_len_sweep  # noqa: E402
from growth.config import load_config  # noqa: E402

MODES = {  # Pre-LN, RMSNorm, SwiGLU, RoPE (the config defaults), fp32
    "quick": dict(
        model=["model.d_model=128", "model.n_layers=2", "model.n_heads=2", "model.head_dim=64", "model.d_ff=344",
               "model.vocab_size=4096", "model.gau_key_size=64"],
        batch_size=8, seq_len=128, rounds=6, seq_lens=[256, 512, 1024, 2048], tokens_per_batch=2048, sweep_rounds=2,
    ),
    "full": dict(
        model=["model.d_model=256", "model.n_layers=4", "model.n_heads=4", "model.head_dim=64", "model.d_ff=688",
               "model.vocab_size=8192", "model.gau_key_size=128"],
        batch_size=8, seq_len=256, rounds=10, seq_lens=[256, 512, 1024, 2048, 4096], tokens_per_batch=4096,
        sweep_rounds=3,
    ),
}


def default_threads() -> tuple[int, str]:
    """OMP_NUM_THREADS when set (``make run`` sets 1), else every core this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "from OMP_NUM_THREADS"
    return len(os.sched_getaffinity(0)), "all cores"


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def plot(path: Path, compare: dict, sweep: list[dict]) -> bool:
    """Left: tokens/s of growth and HF Llama; right: us/token vs sequence length per layer kind."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["growth", "hf_llama"]
    left.bar(names, [compare[n]["tokens_per_s"] for n in names], color=["tab:blue", "tab:gray"])
    left.set(ylabel="tokens/s (train step)", title=f"growth / HF Llama = {compare['ratio']:.2f}")
    for kind in dict.fromkeys(r["kind"] for r in sweep):
        rows = [r for r in sweep if r["kind"] == kind]
        right.plot([r["seq_len"] for r in rows], [r["us_per_token"] for r in rows], marker="o", label=kind)
    right.set_xscale("log", base=2)
    right.set_xticks(sorted({r["seq_len"] for r in sweep}), [str(n) for n in sorted({r["seq_len"] for r in sweep})])
    right.set(xlabel="sequence length", ylabel="us / token (train step)", title="same tokens per step")
    right.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and sweep (smoke run, < 1 min)")
    parser.add_argument("--out", default="bench_out", help="output folder (default: bench_out/)")
    parser.add_argument("--threads", type=int, help="torch threads (default: $OMP_NUM_THREADS, else all cores)")
    parser.add_argument("--chunk-size", type=int, default=128, help="FLASH chunk size (default: 128)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    m = MODES[mode]
    threads, source = (args.threads, "--threads") if args.threads else default_threads()
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    busy = " (busy machine: noisy figures)" if load > 0.5 * os.cpu_count() else ""
    print(f"bench_model ({mode}): torch {torch.__version__}, {torch.get_num_threads()} threads ({source}), "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, fp32, CPU; "
          f"load average {load:.1f} on {os.cpu_count()} cores{busy}")
    config = load_config(overrides=[*m["model"], f"model.max_seq_len={m['seq_len']}"]).model

    compare = compare_with_llama(config, m["batch_size"], m["seq_len"], m["rounds"])
    print(f"\ntrain step, batch {m['batch_size']} x seq {m['seq_len']}, {m['rounds']} interleaved rounds (median):")
    print(f"{'model':<10}{'params':>11}{'ms/step':>10}{'tokens/s':>10}")
    for name in ("growth", "hf_llama"):
        r = compare[name]
        print(f"{name:<10}{r['params']:>11,}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>10.0f}")
    spread = sorted(compare["round_ratios"])
    print(f"growth / HF Llama tokens/s ratio: {compare['ratio']:.2f}  (median of per-round ratios; "
          f"range {spread[0]:.2f} .. {spread[-1]:.2f}, ratio of medians {compare['ratio_of_medians']:.2f})")

    sweep = seq_len_sweep(m["model"], m["seq_lens"], m["tokens_per_batch"], args.chunk_size, m["sweep_rounds"])
    kinds = ("attention", "gau", "flash")
    print(f"\nsequence-length sweep, {m['tokens_per_batch']} tokens/step, GAU/FLASH with 2x layers, "
          f"FLASH chunk {args.chunk_size} (median us per token):")
    print(f"{'seq_len':>8}{'batch':>6}" + "".join(f"{k:>12}" for k in kinds))
    for seq_len in m["seq_lens"]:
        rows = {r["kind"]: r for r in sweep if r["seq_len"] == seq_len}
        figures = "".join(f"{rows[k]['us_per_token']:>12.1f}" for k in kinds)
        print(f"{seq_len:>8}{rows['attention']['batch_size']:>6}{figures}")
    first = [r for r in sweep if r["seq_len"] == m["seq_lens"][0]]
    print("params: " + ", ".join(f"{r['kind']} {r['params']:,} ({r['n_layers']} layers)" for r in first))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench_model.json", {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "mode": mode,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "load_average": [load, os.getloadavg()[0]],
        "model_config": dataclasses.asdict(config), "mode_settings": m, "chunk_size": args.chunk_size,
        "sweep_overrides": layer_kinds(config, args.chunk_size), "compare": compare, "sweep": sweep,
    })
    if plot(out / "bench_model.png", compare, sweep):
        print(f"\nwrote {out / 'bench_model.json'} and {out / 'bench_model.png'}")
    else:
        print(f"\nwrote {out / 'bench_model.json'}")
        print("note: matplotlib is not installed (pip install -e '.[dev]'), so no bench_model.png")


if __name__ == "__main__":
    main()
