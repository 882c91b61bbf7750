#!/usr/bin/env python
"""GPU benchmark, one prepared run (< 5 minutes on one H100/H200-class GPU): the trainer's real step
(DeepSpeed ZeRO-2, bf16 with fp32 master weights, fused AdamW, train.compile) of a ~125M Llama-shaped
growth model against transformers' LlamaForCausalLM of the same shape through the same engine and
optimizer, at sequence length 1024 and 2048 (tokens/s, TFLOP/s, MFU against the GPU's dense bf16 peak);
then attention (SDPA) vs GAU vs FLASH models at 2k-16k tokens. Writes <out>/bench_gpu.json and
bench_gpu.png (with matplotlib).

    python tools/bench_gpu.py                 # on a GPU
    python tools/bench_gpu.py --dry-run       # the same code on a tiny shape, on CPU in fp32
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import torch

from growth.bench.harness import write_json
from growth.bench.plotting import MissingPlotting, figure, save_figure


def plot(path: Path, record: dict) -> bool:
    """Left: tokens/s per model and sequence length (MFU on the bars); right: us/token vs length per kind."""
    try:
        fig, (left, right) = figure(2, width=6, height=4.4)
    except MissingPlotting:
        return False
    results, lengths = record["trainer"]["results"], [str(n) for n in record["plan"]["seq_lens"]]
    width = 0.38
    for i, (name, color) in enumerate((("growth", "tab:blue"), ("hf_llama", "tab:gray"))):
        rows = [results[name].get(n, {}) for n in lengths]
        xs = [j + (i - 0.5) * width for j in range(len(lengths))]
        bars = left.bar(xs, [r.get("tokens_per_s", 0.0) for r in rows], width, color=color, label=name)
        for bar, row in zip(bars, rows):
            if row.get("mfu") is not None:
                left.annotate(
                    f"{100 * row['mfu']:.0f}%",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    left.set_xticks(range(len(lengths)), [f"seq {n}" for n in lengths])
    left.set(
        ylabel="tokens/s (trainer step)",
        title=f"{record['device']}, {record['plan']['precision']} (MFU on the bars)",
    )
    left.legend()
    sweep = [r for r in record["sweep"] if "kind" in r]
    for kind in dict.fromkeys(r["kind"] for r in sweep):
        rows = [r for r in sweep if r["kind"] == kind]
        right.plot([r["seq_len"] for r in rows], [r["us_per_token"] for r in rows], marker="o", label=kind)
    if sweep:
        right.set_xscale("log", base=2)
        ticks = sorted({r["seq_len"] for r in sweep})
        right.set_xticks(ticks, [str(t) for t in ticks])
        right.legend()
    right.set(xlabel="sequence length", ylabel="us / token (train step)", title="same tokens per step")
    save_figure(fig, path)
    return True


def report(record: dict) -> None:
    trainer = record["trainer"]
    print(
        f"\ntrainer step ({record['plan']['precision']}, ZeRO-{record['plan']['zero_stage']}, compile "
        f"{record['plan']['compile']}); params growth {trainer['params'].get('growth', 0):,}, "
        f"HF {trainer['params'].get('hf_llama', 0):,}"
    )
    print(
        f"{'model':<10}{'seq':>6}{'micro':>6}{'ms/step':>10}{'tokens/s':>11}{'TFLOP/s':>9}{'MFU':>7}{'mem GiB':>9}"
    )
    for seq_len in map(str, record["plan"]["seq_lens"]):
        for name in ("growth", "hf_llama"):
            r = trainer["results"][name].get(seq_len, {})
            if "skipped" in r:
                print(f"{name:<10}{seq_len:>6}  skipped: {r['skipped']}")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
            mem = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") is not None else "-"
            print(
                f"{name:<10}{seq_len:>6}{r['micro_batch_size']:>6}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>11,.0f}"
                f"{r['tflops']:>9.1f}{mfu:>7}{mem:>9}"
            )
    for seq_len, ratio in trainer.get("ratio", {}).items():
        print(f"growth / HF Llama tokens/s at {seq_len}: {ratio:.2f}")
    print(f"\nlayer kinds, {record['plan']['sweep_tokens']} tokens/step (us per token; x attention's):")
    for row in record["sweep"]:
        if "skipped" in row:
            print(f"  seq {row['seq_len']}: skipped ({row['skipped']})")
        else:
            print(
                f"  seq {row['seq_len']:>6} {row['kind']:<10}{row['us_per_token']:>10.2f}  ({row['ratio_to_attention']:.2f})"
            )
    if record["sdpa_kernels"]:
        print(
            f"SDPA kernels usable here: {', '.join(k for k, ok in record['sdpa_kernels'].items() if ok) or 'none'}"
        )
    print(f"total {record['seconds']:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny shape on CPU in fp32 (what the tests run)"
    )
    parser.add_argument("--no-compile", action="store_true", help="train.compile=false (eager)")
    parser.add_argument(
        "--budget-s",
        type=float,
        help="wall-clock budget of the measurements (default: 280; "
        "sections that would start after it are skipped)",
    )
    parser.add_argument("--out", default="bench_out", help="output folder (default: bench_out/)")
    args = parser.parse_args()

    from growth.bench.gpu import GPUPlan, dry_run_plan, run
    from growth.distributed import init_distributed

    if args.dry_run:
        plan = dry_run_plan(compile=not args.no_compile)
    else:
        if not torch.cuda.is_available():
            print(
                "error: no CUDA device; run on a GPU, or use --dry-run (a tiny shape on CPU)", file=sys.stderr
            )
            return 2
        plan = GPUPlan(compile=not args.no_compile)
    if args.budget_s:
        plan.budget_s = args.budget_s
    world = init_distributed()  # a world of one without a launcher
    print(
        f"bench_gpu ({'dry run, CPU' if args.dry_run else torch.cuda.get_device_name()}): torch {torch.__version__}, "
        f"shape {plan.shape}, {plan.precision}, compile {plan.compile}, budget {plan.budget_s:.0f} s",
        flush=True,
    )
    record = run(plan, world)
    record["date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    record["load_average"] = os.getloadavg()[0]
    report(record)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench_gpu.json", record)
    wrote = "bench_gpu.json and bench_gpu.png" if plot(out / "bench_gpu.png", record) else "bench_gpu.json"
    print(f"wrote {wrote} in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
