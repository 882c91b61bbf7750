"""Export a checkpoint to transformers: `python tools/export_hf.py --from CKPT --out HF_DIR [--dtype fp32|bf16]`.

CKPT is a run dir or a checkpoint folder. A Llama-shaped model (Pre-LN, RMSNorm, SwiGLU, full RoPE, sqrt
scale, causal) is written as LlamaForCausalLM (Qwen2ForCausalLM with q/k/v biases) and loads with plain
`AutoModelForCausalLM.from_pretrained(HF_DIR)`; any other block combination as the project's GrowthForCausalLM,
which loads after `import growth.model.hf_model`. The tokenizer files come along
(AutoTokenizer.from_pretrained(HF_DIR)).
The exported logits are checked against the project's before anything is written. Logic:
growth/checkpoint/hf/convert.py.
"""

import argparse
import json
import sys
from pathlib import Path

from growth.checkpoint.hf import export_hf
from growth.cli import run_reporting_errors
from growth.data.hf_tokenizer import write_hf_tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="run dir or checkpoint folder")
    parser.add_argument("--out", required=True, help="new Hugging Face folder")
    parser.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="weights dtype of the exported model (default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer to write (default: the checkpoint's run tokenizer, or data.tokenizer)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the logits check against the project's model"
    )
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max |logit diff| / max |logits|")
    args = parser.parse_args()
    report = run_reporting_errors(
        lambda: export_hf(
            Path(args.source),
            Path(args.out),
            args.dtype,
            write_hf_tokenizer,
            Path(args.tokenizer) if args.tokenizer else None,
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
                for k in (
                    "architecture",
                    "dtype",
                    "needs_import_growth",
                    "special_ids",
                    "relative_logit_diff",
                )
                if k in report
            },
            indent=2,
        )
    )
    loader = "import growth.model.hf_model; " if report["needs_import_growth"] else ""
    print(f"exported: {args.out}; load with: {loader}AutoModelForCausalLM.from_pretrained({args.out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
