"""Peak memory of saving a checkpoint under ZeRO-3 on 2 ranks (``tools/bench_save_memory.py``).

Each rank builds the same ~100M-parameter model under ZeRO-3, takes one optimizer step (so Adam
state exists), then saves a full checkpoint while a thread samples its resident memory every 2 ms.
The figure is the rise of each rank's RSS above its level just before the save: what saving costs
on top of training. A save that gathers the whole model costs about the model's fp32 size on every
rank; one that gathers a parameter at a time costs about the largest parameter.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

import torch

from growth.config import load_config

MODEL_100M = [
    "model.vocab_size=8192",
    "model.d_model=768",
    "model.n_layers=12",
    "model.n_heads=12",
    "model.head_dim=64",
    "model.d_ff=2048",
    "model.max_seq_len=64",
    "data.seq_len=64",
    "train.zero_stage=3",
    "train.micro_batch_size=2",
    "train.ema_decay=0.99",
]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class PeakSampler:
    """The highest RSS seen while the ``with`` block runs."""

    def __init__(self, every_s: float = 0.002):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every_s)

    def __enter__(self) -> PeakSampler:
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def save_memory_job(world, overrides: list[str], out_dir: str, result_file: str) -> None:
    """On every rank: ZeRO-3 engine, one step, one measured save; rank r writes ``result_file.r``."""
    from growth.checkpoint import RunState, save_checkpoint
    from growth.model import build_model
    from growth.train.ema import EMA
    from growth.train.engine import build_engine, deepspeed_config

    config = load_config(overrides=overrides)
    torch.manual_seed(0)
    model = build_model(config.model)
    params = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    engine = build_engine(model, config.train, deepspeed_config(config.train, world.size))
    ema = EMA(engine.module, config.train.ema_decay)
    ids = torch.randint(config.model.vocab_size, (config.train.micro_batch_size, config.data.seq_len))
    engine.backward(engine(ids).float().logsumexp(-1).mean())
    engine.step()
    ema.update()
    del model
    import gc

    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    with PeakSampler() as sampler:
        save_checkpoint(
            engine,
            Path(out_dir),
            RunState(step=1, world_size=world.size, zero_stage=3),
            config.to_yaml(),
            world,
            ema,
        )
    result = {
        "rank": world.rank,
        "params": params,
        "largest_param": largest,
        "rss_before_save": before,
        "rss_peak_during_save": sampler.peak,
        "save_rise_bytes": sampler.peak - before,
        "save_seconds": time.perf_counter() - started,
    }
    Path(f"{result_file}.{world.rank}").write_text(json.dumps(result))


def run(ranks: int = 2, work: Path | None = None) -> dict:
    """Spawn ``ranks`` gloo processes (as a launcher would) and collect each rank's figures."""
    import torch.multiprocessing as mp

    work = Path(work or tempfile.mkdtemp(prefix="save_memory_"))
    result_file = str(work / "result.json")
    port = _free_port()
    mp.start_processes(
        _entry,
        args=(ranks, port, MODEL_100M, str(work / "checkpoints"), result_file),
        nprocs=ranks,
        start_method="spawn",
    )
    per_rank = [json.loads(Path(f"{result_file}.{r}").read_text()) for r in range(ranks)]
    first = per_rank[0]
    return {
        "model": MODEL_100M,
        "params": first["params"],
        "fp32_model_bytes": 4 * first["params"],
        "largest_param_bytes": 4 * first["largest_param"],
        "ranks": per_rank,
        "max_save_rise_bytes": max(r["save_rise_bytes"] for r in per_rank),
    }


def _entry(rank: int, ranks: int, port: int, overrides, out_dir, result_file) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(ranks),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    from growth.distributed import init_distributed

    world = init_distributed()
    save_memory_job(world, overrides, out_dir, result_file)
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
