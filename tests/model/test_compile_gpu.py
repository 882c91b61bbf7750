"""The GPU path, on a GPU only (every test here skips without CUDA): SDPA's fused kernels take the
attention layer in bf16 (log-n folded into q keeps them usable), the CUDA branches of the GAU/FLASH
kernels equal the CPU ones, and a compiled model equals eager on CUDA. (The bf16 DeepSpeed engine with
fused AdamW, compiled, is in ``test_compile_distributed.py``: it spawns a rank.)"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from growth.model import build_model
from tests.conftest import tiny_model_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def ids_and_mask(vocab: int, batch: int = 2, length: int = 48):
    ids = torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, -7:] = 0
    return ids.cuda(), mask.cuda()


@pytest.mark.parametrize("scale", ["sqrt", "logn"])
def test_attention_runs_on_the_fused_sdpa_kernels_in_bf16(scale):
    config = tiny_model_config(f"model.attention_scale={scale}", "model.head_dim=16", "model.n_heads=2")
    model = build_model(config).cuda().to(torch.bfloat16)
    ids, mask = ids_and_mask(config.vocab_size)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # no padding: is_causal, the flash kernel alone
        model(ids).float().square().mean().backward()
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):  # a boolean mask
        model(ids, mask).float().square().mean().backward()


@pytest.mark.parametrize("chunk", [0, 8])
@pytest.mark.parametrize("scale", ["sqrt", "logn"])
def test_gau_softmax_on_cuda_equals_cpu(chunk, scale):
    """On CUDA the softmax kernel goes through SDPA (fused, e != s); on CPU through explicit matmuls."""
    config = tiny_model_config(
        "model.layer=gau",
        "model.gau_attention=softmax",
        f"model.attention_scale={scale}",
        f"model.chunk_size={chunk}",
    )
    cpu = build_model(config).eval()
    with torch.no_grad():
        for name, param in cpu.named_parameters():
            if name.endswith((".gamma", ".beta")):
                param.normal_(std=1.0)  # O(1) attention logits
    cuda = copy.deepcopy(cpu).cuda()
    ids, mask = ids_and_mask(config.vocab_size)
    for attention_mask in (None, mask):
        with torch.no_grad():
            expected = cpu(ids.cpu(), None if attention_mask is None else attention_mask.cpu())
            got = cuda(ids, attention_mask).cpu()
        real = (
            torch.ones_like(ids.cpu(), dtype=torch.bool)
            if attention_mask is None
            else attention_mask.cpu().bool()
        )
        assert (got - expected)[real].abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())


def test_compiled_model_on_cuda_equals_eager_and_keeps_names():
    config = tiny_model_config("model.layer=gau", "model.chunk_size=8", "model.attention_scale=logn")
    eager = build_model(config).cuda()
    compiled = copy.deepcopy(eager)
    compiled.compile()
    ids, mask = ids_and_mask(config.vocab_size)
    expected, got = eager(ids, mask), compiled(ids, mask)
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())
    assert list(compiled.state_dict()) == list(eager.state_dict())
