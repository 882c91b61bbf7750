"""Loss across growth points, one schedule vs restarted phases: `python tools/bench_growth_schedule.py [--out DIR] [key=value ...]`.

Runs configs/grow_schedule.yaml in one process tree, and the same stages as three runs joined by
tools/expand.py (each phase restarting warmup + cosine); writes DIR/growth_schedule.json and .png
(default bench_out/) and prints the loss bump after each growth for both.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from growth.bench.growth_schedule import compare, plot
from growth.bench.harness import write_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench_out"),
        help="folder for the JSON and PNG (default: %(default)s)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=40,
        help="steps after a growth in which the bump is read (default: %(default)s)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="config overrides for every run, e.g. train.max_steps=150"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="growth_schedule_") as work:
        result = compare(Path(work), args.overrides, args.window)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "growth_schedule.json", result)
    plot(result, args.out / "growth_schedule.png")
    for name in ("one_schedule", "restarted"):
        for bump in result[name]["bumps"]:
            print(
                f"{name}: step {bump['at_step']}: val loss {bump['val_loss_before']:.3f} before, "
                f"at most {bump['max_val_loss_after']:.3f} in the next {args.window} steps (bump {bump['bump']:+.3f})"
            )
        print(f"{name}: final val loss {result[name]['final_val_loss']:.3f}, {result[name]['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
