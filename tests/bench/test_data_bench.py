"""tools/bench_data.py's measurements, end to end on a small corpus (the package's own sources)."""

from __future__ import annotations

import json

import pytest

from growth.bench.data import plot, run, subset
from growth.data.sources import resolve_files

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_subset_is_seeded_and_in_corpus_order():
    files = resolve_files("growth/**/*.py")
    chosen = subset(files, 0.05)
    assert chosen == subset(files, 0.05) and chosen == sorted(chosen, key=files.index)
    assert 0.05e6 <= sum(f.stat().st_size for f in chosen) < 0.05e6 + max(f.stat().st_size for f in files)


def test_the_benchmark_reports_every_figure(tmp_path):
    report = run(
        tmp_path, "growth/**/*.py", vocab_size=1024, sizes_mb=(0.05, 0.1), rounds=1, input_sentence_size=5000
    )
    best = report["throughput"]["best"]
    assert set(best) == {"limit", "workers_1", "workers_2"}
    assert (
        best["workers_1"]["tokens"] == best["workers_2"]["tokens"] == best["limit"]["tokens"]
    )  # the same text
    assert [m["target_mb"] for m in report["preparation_memory"]] == [0.05, 0.1]
    assert all(
        m["peak_rss_bytes"] > 0 and m["last_line"].startswith("prepared: ")
        for m in report["preparation_memory"]
    )
    assert 0 < report["first_step"]["data_ready_s"] < report["first_step"]["process_to_first_step_s"]
    assert "sentencepiece" in report["packages"] and report["tokenizer_training"]["peak_rss_bytes"] > 0
    json.dumps(report)
    plot(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 10_000
