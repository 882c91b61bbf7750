#!/usr/bin/env python
"""Training-step throughput: growth vs HF Llama of the same shape, each eager and compiled
(torch.compile, as train.compile=true), and attention vs GAU vs FLASH across sequence lengths (eager,
and compiled at some lengths). Writes <out>/bench_model.json (and bench_model.png with matplotlib).

    python tools/bench_model.py --quick          # smoke run, a few minutes on 2 cores (compiling included)
    python tools/bench_model.py --threads 2      # full run, ~15 minutes
    python tools/bench_model.py --no-compile     # eager only
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
from pathlib import Path

# Read by libgomp when torch loads. On a busy machine, spinning OpenMP workers that lose their core
# stall every parallel op (2-thread steps measured 10-20x slower); passive workers sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from growth.bench.harness import write_json  # noqa: E402
from growth.bench.plotting import MissingPlotting, figure, save_figure  # noqa: E402
from growth.bench.throughput import compare_with_llama, layer_kinds, seq_len_sweep  # noqa: E402
from growth.config import load_config  # noqa: E402

MODES = {  # Pre-LN, RMSNorm, SwiGLU, RoPE (the config defaults), fp32
    "quick": dict(
        model=[
            "model.d_model=128",
            "model.n_layers=2",
            "model.n_heads=2",
            "model.head_dim=64",
            "model.d_ff=344",
            "model.vocab_size=4096",
            "model.gau_key_size=64",
        ],
        batch_size=8,
        seq_len=128,
        rounds=6,
        seq_lens=[256, 512, 1024, 2048],
        tokens_per_batch=2048,
        sweep_rounds=2,
        compiled_seq_lens=[256],
    ),
    "full": dict(
        model=[
            "model.d_model=256",
            "model.n_layers=4",
            "model.n_heads=4",
            "model.head_dim=64",
            "model.d_ff=688",
            "model.vocab_size=8192",
            "model.gau_key_size=128",
        ],
        batch_size=8,
        seq_len=256,
        rounds=10,
        seq_lens=[256, 512, 1024, 2048, 4096],
        tokens_per_batch=4096,
        sweep_rounds=4,
        compiled_seq_lens=[256, 4096],
    ),
}


def default_threads() -> tuple[int, str]:
    """OMP_NUM_THREADS when set (``make run`` sets 1), else every core this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "from OMP_NUM_THREADS"
    return len(os.sched_getaffinity(0)), "all cores"


MODELS = ("growth", "hf_llama", "growth_compiled", "hf_llama_compiled")


def plot(path: Path, compare: dict, sweep: list[dict]) -> bool:
    """Left: tokens/s of growth and HF Llama (eager, compiled); right: us/token vs sequence length per
    layer kind (lines eager, hollow markers compiled)."""
    try:
        fig, (left, right) = figure(2, width=6, height=4.4)
    except MissingPlotting:
        return False
    names = [n for n in MODELS if n in compare]
    colors = {
        "growth": "tab:blue",
        "hf_llama": "tab:gray",
        "growth_compiled": "navy",
        "hf_llama_compiled": "dimgray",
    }
    left.bar(
        [n.replace("_compiled", "\ncompiled") for n in names],
        [compare[n]["tokens_per_s"] for n in names],
        color=[colors[n] for n in names],
    )
    title = f"growth / HF Llama = {compare['ratio']:.2f}"
    if "ratio_best" in compare:
        title = f"eager {compare['ratio']:.2f}, compiled {compare['ratio_compiled']:.2f}, best/best {compare['ratio_best']:.2f}"
    left.set(ylabel="tokens/s (train step)", title=title)
    for kind in dict.fromkeys(r["kind"] for r in sweep):
        rows = [r for r in sweep if r["kind"] == kind and not r.get("compiled")]
        (line,) = right.plot(
            [r["seq_len"] for r in rows], [r["us_per_token"] for r in rows], marker="o", label=kind
        )
        compiled = [r for r in sweep if r["kind"] == kind and r.get("compiled")]
        if compiled:
            right.plot(
                [r["seq_len"] for r in compiled],
                [r["us_per_token"] for r in compiled],
                linestyle="none",
                marker="D",
                markerfacecolor="none",
                color=line.get_color(),
                label=f"{kind} compiled",
            )
    right.set_xscale("log", base=2)
    right.set_xticks(
        sorted({r["seq_len"] for r in sweep}), [str(n) for n in sorted({r["seq_len"] for r in sweep})]
    )
    right.set(xlabel="sequence length", ylabel="us / token (train step)", title="same tokens per step")
    right.legend()
    save_figure(fig, path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small model and sweep (smoke run, < 1 min)")
    parser.add_argument("--out", default="bench_out", help="output folder (default: bench_out/)")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: $OMP_NUM_THREADS, else all cores)"
    )
    parser.add_argument("--chunk-size", type=int, default=128, help="FLASH chunk size (default: 128)")
    parser.add_argument("--no-compile", action="store_true", help="eager only (no torch.compile rows)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    m = MODES[mode]
    threads, source = (args.threads, "--threads") if args.threads else default_threads()
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    busy = " (busy machine: noisy figures)" if load > 0.5 * os.cpu_count() else ""
    print(
        f"bench_model ({mode}): torch {torch.__version__}, {torch.get_num_threads()} threads ({source}), "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, fp32, CPU; "
        f"load average {load:.1f} on {os.cpu_count()} cores{busy}"
    )
    config = load_config(
        overrides=[*m["model"], f"model.max_seq_len={m['seq_len']}", f"data.seq_len={m['seq_len']}"]
    ).model

    compiled = not args.no_compile
    compare = compare_with_llama(config, m["batch_size"], m["seq_len"], m["rounds"], compiled=compiled)
    print(
        f"\ntrain step, batch {m['batch_size']} x seq {m['seq_len']}, {m['rounds']} interleaved rounds (median):"
    )
    print(f"{'model':<19}{'params':>11}{'ms/step':>10}{'tokens/s':>10}")
    for name in (n for n in MODELS if n in compare):
        r = compare[name]
        print(f"{name:<19}{r['params']:>11,}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>10.0f}")
    spread = sorted(compare["round_ratios"])
    print(
        f"growth / HF Llama tokens/s ratio: {compare['ratio']:.2f}  (median of per-round ratios; "
        f"range {spread[0]:.2f} .. {spread[-1]:.2f}, ratio of medians {compare['ratio_of_medians']:.2f})"
    )
    if compiled:
        print(
            f"compiled growth / compiled HF Llama: {compare['ratio_compiled']:.2f}; the better growth mode / "
            f"the better reference, per round: {compare['ratio_best']:.2f}"
        )

    compiled_lens = m["compiled_seq_lens"] if compiled else []
    sweep = seq_len_sweep(
        m["model"],
        m["seq_lens"],
        m["tokens_per_batch"],
        args.chunk_size,
        m["sweep_rounds"],
        compiled_seq_lens=compiled_lens,
    )
    kinds = ("attention", "gau", "flash")
    print(
        f"\nsequence-length sweep, {m['tokens_per_batch']} tokens/step, GAU/FLASH with 2x layers, "
        f"FLASH chunk {args.chunk_size} (median us per token; x attention's, per-round median):"
    )
    print(f"{'seq_len':>8}{'mode':>10}{'batch':>6}" + "".join(f"{k:>18}" for k in kinds))
    for seq_len in m["seq_lens"]:
        for mode in (False, True):
            rows = {r["kind"]: r for r in sweep if r["seq_len"] == seq_len and r["compiled"] == mode}
            if rows:
                figures = "".join(
                    f"{rows[k]['us_per_token']:>10.1f} ({rows[k]['ratio_to_attention']:.2f})" for k in kinds
                )
                print(
                    f"{seq_len:>8}{'compiled' if mode else 'eager':>10}{rows['attention']['batch_size']:>6}{figures}"
                )
    first = [r for r in sweep if r["seq_len"] == m["seq_lens"][0] and not r["compiled"]]
    print("params: " + ", ".join(f"{r['kind']} {r['params']:,} ({r['n_layers']} layers)" for r in first))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "bench_model.json",
        {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": mode,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "load_average": [load, os.getloadavg()[0]],
            "model_config": dataclasses.asdict(config),
            "mode_settings": m,
            "chunk_size": args.chunk_size,
            "sweep_overrides": layer_kinds(config, args.chunk_size),
            "compiled": compiled,
            "compare": compare,
            "sweep": sweep,
        },
    )
    if plot(out / "bench_model.png", compare, sweep):
        print(f"\nwrote {out / 'bench_model.json'} and {out / 'bench_model.png'}")
    else:
        print(f"\nwrote {out / 'bench_model.json'}")
        print("note: matplotlib is not installed (pip install -e '.[dev]'), so no bench_model.png")


if __name__ == "__main__":
    main()
