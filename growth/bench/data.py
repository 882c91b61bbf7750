"""Data preparation at scale (``tools/bench_data.py``), on a corpus every install has: the Python
sources of the packages in the project's virtualenv (``.venv/lib/python3*/site-packages/**/*.py``).

- **Throughput** of ``growth.data.prepare`` (the whole preparation: digest, read, encode, write,
  split) with 1 and 2 workers, against the limit measured side by side in the same run:
  sentencepiece's own ``encode`` of the same documents, already in memory, in one process.
  Rounds alternate the order of the three measurements; the best of each is reported.
- **Peak RSS** of ``tools/prepare_data.py`` (the process and its workers, summed, sampled every 20 ms)
  at several corpus sizes (seeded subsets of the files), to show it does not grow with the corpus.
- **Tokenizer training** (``tools/train_tokenizer.py``): seconds and peak RSS on the whole corpus.
- **Time to the first training step** on the prepared corpus (memory-mapped; the tokenizer and the
  cache entry found by digest): ``launch/pretrain.py``'s ``train()`` with ``train.max_steps=1``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from growth.bench.harness import ROOT, package_versions, run_python, subprocess_env
from growth.bench.plotting import figure, save_figure
from growth.data.prepare import Split, prepare_corpus, read_meta
from growth.data.sources import iter_documents, resolve_files
from growth.data.tokenizer import Tokenizer

VENV_SOURCES = ".venv/lib/python3*/site-packages/**/*.py"
MB = 1e6


def subset(files: list[Path], megabytes: float, seed: int = 0) -> list[Path]:
    """A seeded random subset of ``files`` of about ``megabytes`` (whole files), in corpus order."""
    order = list(files)
    random.Random(seed).shuffle(order)
    chosen, total = [], 0
    for path in order:
        if total >= megabytes * MB:
            break
        chosen.append(path)
        total += path.stat().st_size
    position = {p: i for i, p in enumerate(files)}
    return sorted(chosen, key=position.__getitem__)


# -- throughput ---------------------------------------------------------------------------------------
def encode_limit(files: list[Path], tokenizer: Tokenizer) -> dict:
    """sentencepiece's ``encode`` of every document, one call per document, in this one process; the
    text is read first and not timed."""
    texts = ["".join(iter_documents(path, "text")) for path in files]
    nbytes = sum(len(t.encode()) for t in texts)
    processor = tokenizer.processor
    clock = CpuClock()
    tokens = 0
    for text in texts:
        ids = processor.encode(text)
        tokens += len(ids) + 1 if ids else 0  # + EOS, as preparation counts (empty documents are left out)
    seconds, cpu = clock.read()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes": nbytes,
        "tokens": tokens,
        "mb_per_s": nbytes / MB / seconds,
        "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": tokens / cpu,
    }


class CpuClock:
    """Wall seconds, and CPU seconds of this process plus its reaped children (the workers), since creation."""

    def __init__(self) -> None:
        import resource

        self._resource = resource
        self.wall, self.cpu = time.perf_counter(), self._cpu()

    def _cpu(self) -> float:
        children = self._resource.getrusage(self._resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, self._cpu() - self.cpu


def prepare_timed(files: list[Path], tokenizer: Tokenizer, workers: int, cache: Path) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    clock = CpuClock()
    folder = prepare_corpus([str(f) for f in files], tokenizer, cache, split=Split(0.05, 0), workers=workers)
    seconds, cpu = clock.read()
    meta = read_meta(folder)
    shutil.rmtree(cache, ignore_errors=True)
    nbytes = sum(f.stat().st_size for f in files)
    return {
        "workers": workers,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes": nbytes,
        "tokens": meta["tokens"],
        "documents": meta["documents"],
        "mb_per_s": nbytes / MB / seconds,
        "tokens_per_s": meta["tokens"] / seconds,
        "tokens_per_cpu_s": meta["tokens"] / cpu,
    }


def throughput(files: list[Path], tokenizer: Tokenizer, work: Path, rounds: int = 2) -> dict:
    runs: dict[str, list[dict]] = {"limit": [], "workers_1": [], "workers_2": []}
    jobs = {
        "limit": lambda: encode_limit(files, tokenizer),
        "workers_1": lambda: prepare_timed(files, tokenizer, 1, work / "cache_w1"),
        "workers_2": lambda: prepare_timed(files, tokenizer, 2, work / "cache_w2"),
    }
    for r in range(rounds):
        for name in list(jobs) if r % 2 == 0 else list(reversed(jobs)):
            before = os.getloadavg()[0]
            runs[name].append({**jobs[name](), "load_before": before, "load_after": os.getloadavg()[0]})
            print(f"  {name}: {runs[name][-1]['mb_per_s']:.2f} MB/s (load average {before:.1f})", flush=True)
    best = {name: max(results, key=lambda x: x["mb_per_s"]) for name, results in runs.items()}
    limit = best["limit"]["tokens_per_s"]
    # Wall-clock ratios are what a user sees, but on a shared machine they also measure the neighbours;
    # tokens per CPU-second (this process and its workers) say how much work a token costs.
    cpu_limit = best["limit"]["tokens_per_cpu_s"]
    return {
        "best": best,
        "runs": runs,
        "ratio_1_worker": best["workers_1"]["tokens_per_s"] / limit,
        "ratio_2_workers": best["workers_2"]["tokens_per_s"] / limit,
        "cpu_efficiency_1_worker": best["workers_1"]["tokens_per_cpu_s"] / cpu_limit,
        "cpu_efficiency_2_workers": best["workers_2"]["tokens_per_cpu_s"] / cpu_limit,
        "targets": {"ratio_1_worker": 0.8, "ratio_2_workers": 1.6},
    }


# -- memory -------------------------------------------------------------------------------------------
def tree_rss(pid: int) -> tuple[int, int]:
    """(summed RSS of a process and its descendants, the largest one's RSS), in bytes."""
    import psutil

    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    sizes = []
    for process in members:
        try:
            sizes.append(process.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(sizes), max(sizes, default=0)


def peak_rss(cmd: list[str], every_s: float = 0.02) -> dict:
    """Run ``cmd`` and sample its process tree's memory until it exits."""
    started = time.perf_counter()
    process = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=subprocess_env(threads=1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peaks = [0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total, largest = tree_rss(process.pid)
            peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
            time.sleep(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, stderr = process.communicate()
    stop.set()
    thread.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{stderr[-3000:]}")
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_bytes": peaks[0],
        "peak_rss_largest_process_bytes": peaks[1],
        "last_line": stdout.strip().splitlines()[-1] if stdout.strip() else "",
    }


def preparation_memory(
    files: list[Path], tokenizer: Tokenizer, sizes_mb: list[float], work: Path, workers: int = 2
) -> list[dict]:
    results = []
    for size in sizes_mb:
        chosen = subset(files, size)
        config = work / f"rss_{size:g}.yaml"
        config.write_text(
            json.dumps(
                {
                    "data": {
                        "corpus": [str(p) for p in chosen],
                        "tokenizer": str(tokenizer.path),
                        "cache_dir": str(work / f"cache_rss_{size:g}"),
                    }
                }
            )
        )
        shutil.rmtree(work / f"cache_rss_{size:g}", ignore_errors=True)
        run = peak_rss(
            [
                sys.executable,
                str(ROOT / "tools/prepare_data.py"),
                "--config",
                str(config),
                "--workers",
                str(workers),
            ]
        )
        shutil.rmtree(work / f"cache_rss_{size:g}", ignore_errors=True)
        corpus_bytes = sum(p.stat().st_size for p in chosen)
        results.append(
            {"target_mb": size, "corpus_bytes": corpus_bytes, "files": len(chosen), "workers": workers, **run}
        )
        print(
            f"  {corpus_bytes / MB:.0f} MB: peak RSS {run['peak_rss_bytes'] / MB:.0f} MB in {run['seconds']:.1f} s",
            flush=True,
        )
    return results


def tokenizer_training(spec: str, out: Path, vocab_size: int, input_sentence_size: int) -> dict:
    run = peak_rss(
        [
            sys.executable,
            str(ROOT / "tools/train_tokenizer.py"),
            "--input",
            spec,
            "--out",
            str(out),
            "--vocab-size",
            str(vocab_size),
            "--input-sentence-size",
            str(input_sentence_size),
        ]
    )
    return {"vocab_size": vocab_size, "input_sentence_size": input_sentence_size, **run}


# -- time to the first step ---------------------------------------------------------------------------
FIRST_STEP = """
import json, sys, time
t_process = float(sys.argv[1])
from growth.config import load_config
from growth.distributed import init_distributed
from growth.train.callback import Callback
from growth.train import run as R
t_imported = time.time()
overrides = json.loads(sys.argv[2])
config = load_config(overrides=overrides)
world = init_distributed()
marks = {}
class FirstStep(Callback):
    def post_step(self, trainer, result):
        marks.setdefault("first_step", time.time())
t0 = time.time()
cache = R.default_cache_dir(config.data.cache_dir)
tokenizer = R.ensure_tokenizer(config, cache, world)
data = R.load_token_data(config, tokenizer, cache, world)
window = data.train[0 : config.data.seq_len + 1]
t_data = time.time()
R.train(config, world, callbacks=[FirstStep()])
print(json.dumps({"data_ready_s": t_data - t0, "first_step_s": marks["first_step"] - t_data,
                  "imports_s": t_imported - t_process, "process_to_first_step_s": marks["first_step"] - t_process}))
"""


def first_step(overrides: list[str]) -> dict:
    """In a fresh process: tokenizer + cache lookup (digest) + memory-map + one window, then ``train()`` to
    the end of step 1 (engine, model, the step); each timed."""
    return run_python(["-c", FIRST_STEP, repr(time.time()), json.dumps(overrides)], threads=1, timeout=900)


# -- the whole benchmark ------------------------------------------------------------------------------
def run(
    work: Path,
    spec: str = VENV_SOURCES,
    vocab_size: int = 8192,
    sizes_mb: tuple[float, ...] = (20, 80, 200),
    rounds: int = 2,
    input_sentence_size: int = 1_000_000,
) -> dict:
    files = resolve_files(spec)
    corpus_bytes = sum(f.stat().st_size for f in files)
    print(f"corpus: {len(files)} files, {corpus_bytes / MB:.1f} MB ({spec})", flush=True)
    print("tokenizer training ...", flush=True)
    tokenizer_path = work / "tokenizer.model"
    training = tokenizer_training(spec, tokenizer_path, vocab_size, input_sentence_size)
    tokenizer = Tokenizer.load(tokenizer_path)
    print(f"  {training['seconds']:.0f} s, peak RSS {training['peak_rss_bytes'] / MB:.0f} MB", flush=True)
    print("throughput (whole corpus) ...", flush=True)
    speed = throughput(files, tokenizer, work, rounds)
    print("peak RSS of preparation ...", flush=True)
    memory = preparation_memory(files, tokenizer, list(sizes_mb), work)
    print("time to the first step ...", flush=True)
    cache = work / "cache_first_step"
    # A small model and batch: the figure is about reaching the first step, not about the step's compute.
    overrides = [
        f"data.corpus={spec}",
        f"data.tokenizer={tokenizer_path}",
        f"data.cache_dir={cache}",
        f"model.vocab_size={vocab_size}",
        "model.d_model=64",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.d_ff=192",
        "train.micro_batch_size=4",
        "train.eval_batches=1",
        "train.max_steps=1",
        f"train.out_dir={work / 'first_step_run'}",
        "train.resume=none",
        "train.eval_interval=1000",
        "train.save_interval=1000",
    ]
    prepared = peak_rss(
        [
            sys.executable,
            str(ROOT / "tools/prepare_data.py"),
            *overrides[:3],
            f"model.vocab_size={vocab_size}",
        ]
    )
    start = first_step(overrides)
    shutil.rmtree(work / "first_step_run", ignore_errors=True)
    print(
        f"  data ready {start['data_ready_s']:.2f} s, first step {start['first_step_s']:.2f} s after",
        flush=True,
    )
    import platform

    import numpy
    import sentencepiece

    return {
        "corpus": {"spec": spec, "files": len(files), "bytes": corpus_bytes},
        "tokenizer_training": training,
        "throughput": speed,
        "preparation_memory": memory,
        "first_step": {**start, "prepared_with": prepared, "target_s": 5.0},
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "sentencepiece": sentencepiece.__version__,
            "numpy": numpy.__version__,
        },
        "packages": package_versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def plot(report: dict, path: Path) -> None:
    fig, (left, right) = figure(2, width=5.5, height=4)
    best = report["throughput"]["best"]
    names = ["limit", "workers_1", "workers_2"]
    labels = ["sentencepiece encode\n(1 process, in memory)", "prepare\n1 worker", "prepare\n2 workers"]
    speeds = [best[n]["tokens_per_s"] / 1e6 for n in names]
    bars = left.bar(labels, speeds, color=["#999999", "#4477aa", "#228833"])
    limit = speeds[0]
    left.axhline(0.8 * limit, ls="--", c="#4477aa", lw=1, label="target 0.8x limit (1 worker)")
    left.axhline(1.6 * limit, ls="--", c="#228833", lw=1, label="target 1.6x limit (2 workers)")
    for bar, name in zip(bars, names):
        left.annotate(
            f"{best[name]['mb_per_s']:.1f} MB/s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_ylabel("million tokens / s")
    left.set_title(f"throughput, {report['corpus']['bytes'] / MB:.0f} MB of Python sources")
    left.legend(fontsize=7, loc="upper left")
    memory = report["preparation_memory"]
    sizes = [m["corpus_bytes"] / MB for m in memory]
    right.plot(sizes, [m["peak_rss_bytes"] / MB for m in memory], "o-", label="process + workers (sum)")
    right.plot(
        sizes, [m["peak_rss_largest_process_bytes"] / MB for m in memory], "s--", label="largest process"
    )
    right.axhline(1000, ls=":", c="k", lw=1, label="target 1 GB")
    right.set_xlabel("corpus MB")
    right.set_ylabel("peak RSS MB")
    right.set_ylim(0, max(1100, max(m["peak_rss_bytes"] / MB for m in memory) * 1.1))
    right.set_title(f"preparation memory ({memory[0]['workers']} workers)")
    right.legend(fontsize=7)
    save_figure(fig, path, dpi=120)
