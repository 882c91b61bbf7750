"""Data: corpora of many files and formats (``sources``), parallel streaming tokenization into a cache
of packed token files (``prepare``, ``worker``), mixtures (``mixture``), the config-level pipeline
(``pipeline``), memory-mapped loading (``packed``), a resumable rank-aware sampler, MLM masking."""
