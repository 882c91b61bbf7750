"""Grow a checkpoint: `python tools/expand.py --from CKPT --to NEW_CONFIG --out DIR [--noise-std X] [--seed S]`.

CKPT is a run dir or a checkpoint folder (any ZeRO stage, any world size); NEW_CONFIG a YAML whose
`model` section is the larger model. Writes DIR (continue with
`deepspeed launch/pretrain.py --config DIR/config.yaml train.out_dir=...`) and DIR/expand_report.json.
"""

import argparse
import json
import sys
from pathlib import Path

from growth.config import ConfigError
from growth.data.errors import DataError
from growth.expand import GrowthError
from growth.expand.grow_checkpoint import expand_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="run dir or checkpoint folder")
    parser.add_argument("--to", dest="target", required=True, help="YAML config of the larger model")
    parser.add_argument("--out", required=True, help="new folder for the grown checkpoint")
    parser.add_argument("--noise-std", type=float, default=1e-3, help="zero-sum symmetry-breaking noise (exact at any value)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=["grown", "reset"], default="grown",
                        help="grow Adam moments with the weights, or reset them (the new run re-warms up)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max |logit diff| / max(1, |logits|)")
    args = parser.parse_args()
    try:
        report = expand_checkpoint(Path(args.source), Path(args.target), Path(args.out), args.noise_std, args.seed,
                                   args.optimizer, args.tolerance)
    except (ConfigError, DataError, GrowthError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("max_abs_logit_diff", "relative_logit_diff", "params_before",
                                             "params_after", "loss_before", "loss_after")}, indent=2))
    print(f"grown checkpoint: {args.out}; continue with: deepspeed launch/pretrain.py --config {args.out}/config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
