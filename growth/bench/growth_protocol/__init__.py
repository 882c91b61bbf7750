"""Does growth pay? The protocols of ``tools/bench_growth.py`` (docs/growth_benchmark.md).

Against the compute-optimal envelope (the headline): ``envelope_plan.py`` the sizes, budgets and presets;
``envelope.py`` the runs (every size's LR sweep, scratch with fully decayed branches, the grown path, the recipe
ablations); ``envelope_read.py`` the readings (envelope, crossover check, fitted law, interval over seeds);
``scaling.py`` the math (the lower hull, L(N, D), Student-t intervals); ``envelope_report.py`` its text and plot.

Against the large model alone (``--large-only``): ``recipe.py`` the grown path's knobs and the ablations;
``plan.py`` shapes, budgets and the steps of every phase; ``curves.py`` the saving read against the scratch curve
(both accountings) and the staged-training slope rule; ``protocol.py`` the whole comparison over seeds;
``report.py`` the text summary and plot. Both train through ``runs.py`` (WSD decay branches, the restarted
flow) on the harness's run cache (``growth/bench/harness.py``: cached by config digest, resumable).
"""
