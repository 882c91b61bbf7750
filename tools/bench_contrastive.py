"""Cached contrastive accumulation and CoSENT vs InfoNCE: `python tools/bench_contrastive.py [--checkpoint CKPT]`.

Prints (1) peak memory and seconds per optimizer step for a global batch of 512 sentences, cached in
micro-batches of 32 against one batch of 512 (equal gradients), and (2) STS-B dev Spearman after
fine-tuning the pretrained default model with CoSENT and with InfoNCE the same way (CKPT, or a
default pretraining run made first). Writes bench_out/bench_contrastive.json and .png.
"""

import argparse
import sys
from pathlib import Path

from growth.bench.contrastive import fine_tuning, memory_and_time, plot
from growth.bench.harness import machine, write_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="pretrained default run; omitted: pretrain one"
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=300,
        help="steps of the pretrained default model when --checkpoint is not given (default: %(default)s)",
    )
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=120,
        help="CoSENT and InfoNCE fine-tuning steps each (default: %(default)s)",
    )
    parser.add_argument(
        "--timed-steps",
        type=int,
        default=4,
        help="optimizer steps timed for the memory/time comparison (default: %(default)s)",
    )
    parser.add_argument(
        "--skip-finetune", action="store_true", help="only the memory/time comparison, no STS-B fine-tuning"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_out"),
        help="folder for the JSON and PNG (default: %(default)s)",
    )
    args = parser.parse_args()
    work = args.out / "contrastive"
    work.mkdir(parents=True, exist_ok=True)

    record = {"memory_time": memory_and_time(work, steps=args.timed_steps)}
    mt = record["memory_time"]
    print(f"{'variant':>22} {'peak MB':>9} {'s/step':>8}")
    for name, label in (
        ("full", "1 batch of 512"),
        ("cached", f"{mt['cached']['micro_batches']} x 32 cached"),
    ):
        print(f"{label:>22} {mt[name]['peak_rss_increase_mb']:>9.1f} {mt[name]['seconds_per_step']:>8.2f}")
    print(
        f"memory ratio {mt['memory_ratio']:.3f} (target <= 0.25), time ratio {mt['time_ratio']:.2f} (target <= 1.5), "
        f"max gradient difference {mt['max_grad_difference']:.2e} of max {mt['max_grad']:.2e}"
    )

    if not args.skip_finetune:
        record["fine_tuning"] = ft = fine_tuning(
            work, args.checkpoint, args.finetune_steps, args.pretrain_steps
        )
        print(f"STS-B dev Spearman after {args.finetune_steps} steps of {ft['pairs_per_step']} pairs:")
        for name in ("pretrained", "cosent", "infonce"):
            print(
                f"{name:>11}: raw {ft[name]['raw']:.4f}"
                + (f"  ema {ft[name]['ema']:.4f}" if "ema" in ft[name] else "")
            )

    record.update(machine())
    write_json(args.out / "bench_contrastive.json", record)
    plot(record, args.out / "bench_contrastive.png")
    print(f"wrote {args.out / 'bench_contrastive.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
