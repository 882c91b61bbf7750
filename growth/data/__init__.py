"""Data: sentencepiece tokenizer, packed token files, a resumable rank-aware sampler, MLM masking."""
