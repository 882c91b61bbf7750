"""Import a Hugging Face model: `python tools/import_hf.py --from HF_DIR --out DIR [--no-verify]`.

HF_DIR is a local `save_pretrained` folder of LlamaForCausalLM, MistralForCausalLM (no sliding window) or
Qwen2ForCausalLM (safetensors or .bin, sharded or not; no hub access). DIR gets model.safetensors, config.yaml
and tokenizer.model (the Hugging Face tokenizer as one file): grow it with `tools/expand.py --from DIR`, or
train from it with `train.init_from=DIR` (`--config DIR/config.yaml`). What cannot be represented is refused
with one line naming the config.json field. Logic: growth/checkpoint/hf/convert.py.
"""

import argparse
import json
import sys
from pathlib import Path

from growth.checkpoint.hf import import_hf
from growth.cli import run_reporting_errors
from growth.data.hf_tokenizer import bundle_hf_tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="a local save_pretrained folder")
    parser.add_argument("--out", required=True, help="new checkpoint folder")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the logits check against transformers (it loads the model twice)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max |logit diff| / max |logits|")
    args = parser.parse_args()
    report = run_reporting_errors(
        lambda: import_hf(
            Path(args.source),
            Path(args.out),
            bundle_hf_tokenizer,
            not args.no_verify,
            args.tolerance,
            warn=lambda line: print(line, file=sys.stderr),
        ),
        args.out,
    )
    if report is None:
        return 2
    print(
        json.dumps(
            {
                k: report[k]
                for k in ("architecture", "weights", "special_ids", "relative_logit_diff")
                if k in report
            },
            indent=2,
        )
    )
    print(
        f"imported checkpoint: {args.out}; grow it with: python tools/expand.py --from {args.out} --to NEW.yaml --out GROWN"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
