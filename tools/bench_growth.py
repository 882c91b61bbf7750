"""Growth vs training from scratch on the bundled corpus, and a ~1B expansion: `python tools/bench_growth.py`.

Writes bench_out/bench_growth.json and bench_out/bench_growth.png (validation loss against FLOPs).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from growth.bench.growth_vs_scratch import expand_one_billion, growth_vs_scratch


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    scratch = result["scratch"]["curve"]
    ax.plot([p["flops"] for p in scratch], [p["val_loss"] for p in scratch], label="large from scratch")
    small, large = result["grown"]["curve_small"], result["grown"]["curve_large"]
    ax.plot([p["flops"] for p in small], [p["val_loss"] for p in small], label="small (before growth)")
    ax.plot([p["flops"] for p in large], [p["val_loss"] for p in large], label="grown (after growth)")
    ax.axhline(result["target_val_loss"], color="grey", linestyle=":", label="scratch's final val loss")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("validation loss")
    ax.set_title("growth vs scratch (" + (f"FLOPs ratio {result['flops_ratio']:.2f})" if "flops_ratio" in result else "target not reached)"))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-steps", type=int, default=800, help="steps of the small model before growing (default: %(default)s)")
    parser.add_argument("--large-steps", type=int, default=800, help="steps of the large model from scratch (default: %(default)s)")
    parser.add_argument("--continue-steps", type=int, default=600, help="steps of the grown model (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=25, help="validation every this many steps (default: %(default)s)")
    parser.add_argument("--continue-lr", type=float, default=None, help="peak LR after growth (default: the config's)")
    parser.add_argument("--continue-warmup", type=int, default=None, help="warmup steps after growth")
    parser.add_argument("--skip-1b", action="store_true", help="skip expanding the ~1B-parameter checkpoint")
    parser.add_argument("--out", default="bench_out", help="folder for the JSON and PNG (default: %(default)s)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        continued = tuple([f"train.lr={args.continue_lr}"] * (args.continue_lr is not None)
                          + [f"train.warmup_steps={args.continue_warmup}"] * (args.continue_warmup is not None))
        result = growth_vs_scratch(Path(work), args.small_steps, args.large_steps, args.continue_steps,
                                   args.eval_every, continued)
        if not args.skip_1b:
            result["expand_1b"] = expand_one_billion(Path(work))
    print(f"target (scratch final val loss): {result['target_val_loss']:.4f}")
    print(f"scratch: {result['scratch']['flops']:.3e} FLOPs, {result['scratch']['seconds']:.0f} s")
    if "flops_ratio" in result:
        print(f"grown:   {result['grown']['flops']:.3e} FLOPs, {result['grown']['seconds']:.0f} s "
              f"-> FLOPs ratio {result['flops_ratio']:.2f} ({1 - result['flops_ratio']:.0%} saved), time ratio {result['time_ratio']:.2f}")
    else:
        print("grown path did not reach the target within --continue-steps")
    if "expand_1b" in result:
        big = result["expand_1b"]
        print(f"1B expansion: {big['params_before'] / 1e9:.2f}B -> {big['params_after'] / 1e9:.2f}B params in "
              f"{big['seconds']:.0f} s, peak RSS {big['peak_rss_bytes'] / 2**30:.2f} GiB = "
              f"{big['peak_rss_over_output']:.2f} x output ({big['output_bytes'] / 2**30:.2f} GiB)")
    tmp = out / "bench_growth.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out / "bench_growth.json")
    plot(result, out / "bench_growth.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
