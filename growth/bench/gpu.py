"""GPU benchmark (``tools/bench_gpu.py``): one prepared run, a few minutes on one GPU.

1. **The trainer's real step** (``TokenLMModule.train_batch`` through a DeepSpeed engine from
   ``growth.train.engine.build_engine``: ZeRO-2 on one GPU, bf16 with fp32 master weights, torch's fused
   AdamW, ``train.compile``) on random tokens, for a ~125M Llama-shaped growth model and for
   ``transformers``' ``LlamaForCausalLM`` of the same shape through the same engine, optimizer and step,
   at each sequence length: tokens/s, TFLOP/s, MFU against the device's dense bf16 peak
   (``growth/train/metrics.py``), peak memory.
2. **Layer kinds at long sequences**: attention (SDPA: flash / memory-efficient kernels), dense GAU and
   FLASH models with the same tokens per step, 2k-16k tokens (``throughput.seq_len_sweep`` on the GPU,
   bf16 weights, fused AdamW; eager).

Every section checks a wall-clock budget first and records ``skipped`` instead of running past it, so
the script ends inside its device time. ``dry_run`` runs the same code on a tiny shape on CPU (fp32:
DeepSpeed's bf16 needs a GPU), which is how the tests exercise it.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from growth.bench.throughput import llama_twin, seq_len_sweep
from growth.config import ModelConfig, TrainConfig, load_config
from growth.data.batches import BatchMaker
from growth.data.sampler import WindowSampler
from growth.distributed import World
from growth.model import accounting, build_model
from growth.train.engine import build_engine, deepspeed_config
from growth.train.lm_module import TokenLMModule
from growth.train.metrics import mfu, peak_tflops

# Llama-shaped (Pre-LN, RMSNorm, SwiGLU, RoPE, untied): 124M parameters at vocab 32000 (GPT-2 small's
# width and depth; d_ff = 8/3 d rounded to 2048).
SHAPES = {
    "125m": [
        "model.d_model=768",
        "model.n_layers=12",
        "model.n_heads=12",
        "model.head_dim=64",
        "model.d_ff=2048",
        "model.vocab_size=32000",
        "model.gau_key_size=128",
    ],
    "tiny": [
        "model.d_model=64",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.head_dim=32",
        "model.d_ff=128",
        "model.vocab_size=512",
        "model.gau_key_size=32",
    ],
}


@dataclass
class GPUPlan:
    shape: str = "125m"
    seq_lens: list[int] = field(default_factory=lambda: [1024, 2048])
    tokens_per_step: int = 32768  # per optimizer step (one micro-batch: micro = tokens / seq_len)
    steps: int = 10  # timed steps per model and length (after warmup)
    warmup: int = 3  # untimed (compiling happens here)
    precision: str = "bf16"
    compile: bool = True
    zero_stage: int = 2
    sweep_seq_lens: list[int] = field(default_factory=lambda: [2048, 4096, 8192, 16384])
    sweep_tokens: int = 32768
    sweep_rounds: int = 5
    chunk_size: int = 256
    budget_s: float = 280.0  # the whole run; sections that would start later are skipped
    device: str = "cuda"


def dry_run_plan(compile: bool = True) -> GPUPlan:
    """The same run at a tiny shape on CPU in fp32 (well under a minute without compiling)."""
    return GPUPlan(
        shape="tiny",
        seq_lens=[32, 64],
        tokens_per_step=256,
        steps=2,
        warmup=1,
        precision="fp32",
        compile=compile,
        sweep_seq_lens=[64, 128],
        sweep_tokens=256,
        sweep_rounds=2,
        chunk_size=32,
        budget_s=600.0,
        device="cpu",
    )


def model_config(plan: GPUPlan) -> ModelConfig:
    longest = max(plan.seq_lens)
    return load_config(
        overrides=[*SHAPES[plan.shape], f"model.max_seq_len={longest}", f"data.seq_len={longest}"]
    ).model


class LogitsOnly(nn.Module):
    """A ``transformers`` causal LM seen as the trainer sees a growth model: ``forward(ids) -> logits``
    and ``flops_per_token`` (the same accounting, so both models' MFU use one formula)."""

    def __init__(self, model: nn.Module, config: ModelConfig):
        super().__init__()
        self.model, self.config = model, config

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits

    def flops_per_token(self, seq_len: int) -> float:
        return accounting.flops_per_token(self.config, seq_len)


def train_config(plan: GPUPlan, seq_len: int) -> TrainConfig:
    micro = max(1, plan.tokens_per_step // seq_len)
    return load_config(
        overrides=[
            f"train.micro_batch_size={micro}",
            "train.grad_accum=1",
            f"train.zero_stage={plan.zero_stage}",
            f"train.precision={plan.precision}",
            f"train.compile={str(plan.compile).lower()}",
            "train.lr=3e-4",
            "train.warmup_steps=10",
            "train.max_steps=1000",
        ]
    ).train


def random_token_module(
    network: nn.Module, config: ModelConfig, seq_len: int, micro: int, world: World, seed: int = 0
) -> TokenLMModule:
    """The trainer's token-LM step over a random token stream (ids 5.. vocab: no special tokens)."""
    windows = 64 * micro * world.size  # 64 steps before the stream repeats
    tokens = np.random.default_rng(seed).integers(5, config.vocab_size, size=windows * seq_len + 1)
    tokens = tokens.astype(np.uint16 if config.vocab_size <= 65536 else np.int32)
    batches = BatchMaker(tokens, seq_len, "clm", config.vocab_size)
    return TokenLMModule(
        network, batches, batches, WindowSampler(len(tokens), seq_len, seed), world, micro, 1, 1
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def trainer_step_throughput(
    engine, module: TokenLMModule, steps: int, warmup: int, peak: float | None, n_gpus: int
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of ``module.train_batch`` (after ``warmup``); medians."""
    device = engine.device if isinstance(engine.device, torch.device) else torch.device(engine.device)
    for _ in range(warmup):
        module.train_batch(engine, module.micro_batches())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds, losses = [], []
    for _ in range(steps):
        batches = (
            module.micro_batches()
        )  # data outside the timed region, as the prefetching a real loader does
        _sync(device)
        start = time.perf_counter()
        result = module.train_batch(engine, batches)  # ends in .item(): the step is complete when it returns
        _sync(device)
        seconds.append(time.perf_counter() - start)
        losses.append(result.loss)
    median = statistics.median(seconds)
    return {
        "ms_per_step": 1e3 * median,
        "seconds": seconds,
        "tokens_per_step": result.tokens,
        "tokens_per_s": result.tokens / median,
        "tflops": result.flops / median / 1e12,
        "mfu": mfu(result.flops, median, peak, n_gpus),
        "losses": losses,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def compare_trainer_steps(plan: GPUPlan, world: World, deadline: float) -> dict[str, Any]:
    """growth and HF Llama, each through build_engine and TokenLMModule.train_batch, at every length."""
    config = model_config(plan)
    peak = peak_tflops() if plan.device == "cuda" else None
    out: dict[str, Any] = {"params": {}, "results": {"growth": {}, "hf_llama": {}}}
    for seq_len in plan.seq_lens:  # both models at one length before the next: pairs stay complete
        for name in ("growth", "hf_llama"):
            if time.monotonic() > deadline:
                out["results"][name][str(seq_len)] = {"skipped": "time budget"}
                continue
            torch.manual_seed(0)
            network = build_model(config) if name == "growth" else LogitsOnly(llama_twin(config), config)
            out["params"][name] = accounting.num_params(network)
            train = train_config(plan, seq_len)
            engine = build_engine(network, train, deepspeed_config(train, world.size))
            module = random_token_module(engine.module, config, seq_len, train.micro_batch_size, world)
            started = time.monotonic()
            row = trainer_step_throughput(engine, module, plan.steps, plan.warmup, peak, world.size)
            row.update(
                micro_batch_size=train.micro_batch_size,
                seconds_total=time.monotonic() - started,
                compiled=bool(getattr(engine, "is_compiled", False)),
            )
            out["results"][name][str(seq_len)] = row
            del engine, module, network
            _free()
    for seq_len in map(str, plan.seq_lens):
        g, h = out["results"]["growth"][seq_len], out["results"]["hf_llama"][seq_len]
        if "tokens_per_s" in g and "tokens_per_s" in h:
            out.setdefault("ratio", {})[seq_len] = g["tokens_per_s"] / h["tokens_per_s"]
    return out


def sdpa_kernels(device: str, dtype: torch.dtype) -> dict[str, bool]:
    """Which of SDPA's fused kernels run this model's attention shapes here (causal, no mask)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 12, 1024, 64, device=device, dtype=dtype, requires_grad=True)
    found = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
            found[backend.name.lower()] = True
        except RuntimeError:
            found[backend.name.lower()] = False
    return found


def layer_kind_sweep(plan: GPUPlan, deadline: float) -> list[dict[str, Any]]:
    """attention (SDPA) vs GAU vs FLASH at 2k-16k tokens, one length at a time until the budget ends."""
    dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32
    rows: list[dict[str, Any]] = []
    for seq_len in plan.sweep_seq_lens:
        if time.monotonic() > deadline:
            rows.append({"seq_len": seq_len, "skipped": "time budget"})
            continue
        try:
            rows += seq_len_sweep(
                SHAPES[plan.shape],
                [seq_len],
                plan.sweep_tokens,
                plan.chunk_size,
                plan.sweep_rounds,
                warmup=2,
                device=plan.device,
                dtype=dtype,
            )
        except torch.OutOfMemoryError as err:
            rows.append({"seq_len": seq_len, "skipped": f"out of memory: {str(err).splitlines()[0]}"})
        _free()
    for row in rows:
        row.pop("seconds", None)
    return rows


def run(plan: GPUPlan, world: World) -> dict[str, Any]:
    start = time.monotonic()
    deadline = start + plan.budget_s
    device_name = torch.cuda.get_device_name() if plan.device == "cuda" else "cpu"
    dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32
    record: dict[str, Any] = {
        "plan": asdict(plan),
        "device": device_name,
        "peak_bf16_tflops": peak_tflops() if plan.device == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sdpa_kernels": sdpa_kernels(plan.device, dtype) if plan.device == "cuda" else {},
        "model_config": asdict(model_config(plan)),
    }
    # Long sequences get the leftover share: the trainer comparison (the headline) goes first, with
    # about two thirds of the budget.
    record["trainer"] = compare_trainer_steps(plan, world, start + 0.65 * plan.budget_s)
    record["sweep"] = layer_kind_sweep(plan, deadline)
    record["seconds"] = time.monotonic() - start
    return record
