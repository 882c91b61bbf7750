"""Grow a checkpoint: `python tools/expand.py --from CKPT --to NEW_CONFIG --out DIR [--noise-std X] [--seed S] [operators]`.

CKPT is a run dir or a checkpoint folder (any ZeRO stage, any world size); NEW_CONFIG a YAML whose
`model` section is the larger model. Writes DIR (continue with
`deepspeed launch/pretrain.py --config DIR/config.yaml train.out_dir=...`) and DIR/expand_report.json.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from growth.cli import run_reporting_errors
from growth.expand import GrowthError
from growth.expand.grow_checkpoint import expand_checkpoint
from growth.expand.options import DEPTH_OPERATORS, NOISE_KINDS, SPLITS, WIDTH_OPERATORS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="run dir or checkpoint folder")
    parser.add_argument("--to", dest="target", required=True, help="YAML config of the larger model")
    parser.add_argument("--out", required=True, help="new folder for the grown checkpoint")
    parser.add_argument(
        "--noise-std", type=float, default=1e-3, help="zero-sum symmetry-breaking noise (exact at any value)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the noise and the new layers (default: %(default)s)"
    )
    parser.add_argument(
        "--optimizer",
        choices=["grown", "reset"],
        default="grown",
        help="grow Adam moments with the weights, or reset them (the new run re-warms up)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max |logit diff| / max(1, |logits|)")
    # The operators (growth/expand/options.py; a train.growth stage has the same keys and defaults).
    parser.add_argument(
        "--depth-operator",
        choices=DEPTH_OPERATORS,
        default="auto",
        help="auto: zero for Pre-LN, ramp for Post-LN/DeepNorm; ramp: new layers gated in over "
        "--ramp-steps steps of the continued run; stack: G_stack (not function-preserving)",
    )
    parser.add_argument(
        "--ramp-steps", type=int, default=100, help="ramp: optimizer steps for m to go from 0 to 1"
    )
    parser.add_argument(
        "--noise",
        choices=NOISE_KINDS,
        default="absolute",
        help="relative: --noise-std times each weight's RMS",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="equal",
        help="lemon: copies read with shares alpha, (1-alpha)/(c-1), ... (exact for any alpha)",
    )
    parser.add_argument("--split-alpha", type=float, default=0.7, help="lemon: the first copy's share")
    parser.add_argument(
        "--width-operator",
        choices=WIDTH_OPERATORS,
        default="tiled",
        help="tiled [h; h; 0_r], or interleaved (Su: each channel repeated in place, 1/sqrt(k))",
    )
    args = parser.parse_args()
    operators = {
        name: getattr(args, name)
        for name in ("depth_operator", "ramp_steps", "noise", "split", "split_alpha", "width_operator")
    }

    def grow() -> dict:
        if not (math.isfinite(args.tolerance) and args.tolerance > 0):
            raise GrowthError(f"--tolerance {args.tolerance} must be a finite number > 0")
        # --noise-std: grow_state refuses a negative or non-finite value (it would silently mean no noise).
        return expand_checkpoint(
            Path(args.source),
            Path(args.target),
            Path(args.out),
            args.noise_std,
            args.seed,
            args.optimizer,
            args.tolerance,
            **operators,
        )

    # e.g. a full disk under --out: the half-written folder is already removed
    report = run_reporting_errors(grow, args.out, errors=(GrowthError,))
    if report is None:
        return 2
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "max_abs_logit_diff",
                    "relative_logit_diff",
                    "params_before",
                    "params_after",
                    "loss_before",
                    "loss_after",
                    "optimizer",
                )
            },
            indent=2,
        )
    )
    if not report["function_preserving"]:
        print(
            f"not function-preserving ({report['depth_operator']}): loss {report['loss_before']:.4f} -> "
            f"{report['loss_after']:.4f} on the probe batch"
        )
    print(
        f"grown checkpoint: {args.out}; continue with: deepspeed --num_gpus 2 launch/pretrain.py "
        f"--config {args.out}/config.yaml train.out_dir={args.out}_train"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
