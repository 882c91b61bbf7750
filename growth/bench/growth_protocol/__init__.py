"""Does growth pay? The protocol of ``tools/bench_growth.py`` (docs/growth_benchmark.md).

``recipe.py`` the grown path's knobs and the ablations; ``plan.py`` shapes, budgets and the steps of
every phase; ``curves.py`` the saving read against the scratch curve (both accountings) and the
staged-training slope rule; ``runs.py`` the trainer's real runs (cached, resumable, WSD decay
branches); ``protocol.py`` the whole comparison over seeds; ``report.py`` the JSON summary and plot.
"""
