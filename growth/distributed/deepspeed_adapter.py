"""Every place the project touches DeepSpeed internals, in one module (docs/design.md Sec. 1).

- ``SkippingAdamW``: the optimizer DeepSpeed wraps at ZeRO 0 in fp32, where DeepSpeed neither clips
  nor skips non-finite steps.
- Adam moments by parameter *name*, read and set through DeepSpeed's safe APIs
  (``safe_get_full_optimizer_state`` / ``safe_set_full_optimizer_state``) at ZeRO 1-3 and the torch
  state directly at ZeRO 0 — never by replaying a parameter order.
- Universal checkpoints (``ds_to_universal``) for a world-size change.
- The supported DeepSpeed versions (``pyproject.toml`` pins the same range).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Tested range; pyproject.toml pins the same one. The private attributes used below
# (``_hp_mapping``, ``fp32_partitioned_groups_flat``, ``_lazy_init_hp_params_optimizer_state``)
# are stable across it.
SUPPORTED_DEEPSPEED = ((0, 15), (0, 20))  # [min, max)
MOMENT_KEYS = ("exp_avg", "exp_avg_sq")
Moments = dict[str, dict[str, torch.Tensor]]  # parameter name -> exp_avg, exp_avg_sq, step


def configure_environment() -> None:
    """Before DeepSpeed is first imported: (1) on a machine without CUDA, name the CPU accelerator,
    so DeepSpeed does not log that it failed to detect one in every process; (2) keep torch's JIT
    extension cache in this virtualenv, so DeepSpeed's CPU shared-memory all-reduce op
    (``deepspeed_shm_comm``), built once by ``make install`` (``build_cpu_ops``), is found at
    launch instead of rebuilt: the default cache (~/.cache/torch_extensions) is shared by every
    virtualenv on the machine and rebuilt whenever another one's source paths differ; (3) put this
    interpreter's bin folder first on PATH, as activating the virtualenv does, so torch always builds
    with the ninja DeepSpeed installed there: a system ninja of another version hashes commands
    differently in .ninja_log, and every switch between the two rebuilt the op (~20 s, minutes under load)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    tools = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if (Path(tools) / "ninja").is_file() and path.split(os.pathsep)[0] != tools:
        os.environ["PATH"] = os.pathsep.join([tools, path]) if path else tools


def build_cpu_ops() -> str:
    """Build (or find) the CPU shared-memory communication op; returns its cache folder."""
    configure_environment()
    from deepspeed.accelerator import get_accelerator

    if get_accelerator()._name == "cpu":  # GPUs communicate through NCCL; nothing to build
        builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
        if builder is not None:
            builder.load(verbose=False)
    return os.environ["TORCH_EXTENSIONS_DIR"]


SHM_WORKSPACE = "deepspeed_allreduce_buffer"


def shm_workspace_path(rank: int) -> Path:
    """The POSIX shared-memory file DeepSpeed's CPU all-reduce gives ``rank`` (``shm_initialize`` in
    DeepSpeed's csrc/cpu/comm/shm.cpp names it after the user, MASTER_ADDR, MASTER_PORT and the rank)."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    return Path("/dev/shm") / f"{SHM_WORKSPACE}_{os.getuid()}_{addr}_{port}_{rank}"


def unlink_shm_workspace(rank: int) -> None:
    """After every rank has mapped every peer's workspace (a barrier after ``init_distributed``): drop
    this rank's name. DeepSpeed never unlinks it, so each run on a machine would leave ~66 MB of RAM
    per rank in /dev/shm until a reboot (a CI machine filled up); the mappings stay valid until the
    processes exit, so nothing changes for the run, and a killed run leaves nothing either."""
    shm_workspace_path(rank).unlink(missing_ok=True)


@contextlib.contextmanager
def quiet_stdout():
    """DeepSpeed prints "deepspeed_shm_comm_op built successfully" from every rank at every start."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class UnsupportedDeepSpeed(RuntimeError):
    """The installed DeepSpeed is outside the range this adapter is tested with."""


def check_deepspeed_version(version: str | None = None) -> str:
    """Raise ``UnsupportedDeepSpeed`` unless ``version`` (default: the installed one) is supported."""
    if version is None:
        import deepspeed

        version = deepspeed.__version__
    parts = tuple(int(p) for p in version.split("+")[0].split(".")[:2])
    low, high = SUPPORTED_DEEPSPEED
    if not low <= parts < high:
        raise UnsupportedDeepSpeed(
            f"DeepSpeed {version} is not supported (need >= {low[0]}.{low[1]}, "
            f"< {high[0]}.{high[1]}); pip install 'deepspeed>={low[0]}.{low[1]},<{high[0]}.{high[1]}'"
        )
    return version


class SkippingAdamW(torch.optim.AdamW):
    """AdamW that clips to ``max_grad_norm`` and leaves weights and moments untouched when the
    gradient norm is non-finite (used with ZeRO stage 0 in fp32, where DeepSpeed does neither check).

    It exposes what DeepSpeed's engine reads from ZeRO optimizers: ``overflow`` (count the step as
    skipped, hold the LR schedule back) and ``_global_grad_norm`` (the pre-clipping norm).
    """

    def __init__(self, params, max_grad_norm: float = 0.0, **kwargs):
        super().__init__(params, **kwargs)
        self.max_grad_norm = max_grad_norm
        self.overflow = False
        self._global_grad_norm: float | None = None

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's signature
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        limit = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit) if params else torch.zeros(())
        self._global_grad_norm = norm.item()
        self.overflow = not math.isfinite(self._global_grad_norm)
        if self.overflow:
            return None
        return super().step(closure)


def initialize(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, ds_config: dict[str, Any]):
    """``deepspeed.initialize`` on a checked DeepSpeed version; returns the engine."""
    import deepspeed

    check_deepspeed_version()
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    return engine


def set_zero3_leaf_modules(model: nn.Module, classes: list[type]) -> None:
    """ZeRO-3: gather each instance of ``classes`` (with its submodules) in one hook, not per submodule
    (``deepspeed.utils.set_z3_leaf_modules``); before ``initialize``. Used with torch.compile, whose
    graphs break at every ZeRO-3 hook."""
    from deepspeed.utils import set_z3_leaf_modules

    set_z3_leaf_modules(model, classes, raise_if_not_found=False)


def base_optimizer(engine) -> torch.optim.Optimizer:
    """The torch optimizer inside DeepSpeed's ZeRO / bf16 wrappers."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def is_managed(param: nn.Parameter) -> bool:
    """Whether DeepSpeed maps this parameter onto flat optimizer state (ZeRO 1-3, bf16)."""
    return hasattr(param, "ds_id") or hasattr(param, "_hp_mapping")


def full_shape(param: nn.Parameter) -> tuple[int, ...]:
    """The full shape, also for a ZeRO-3 partitioned parameter (whose ``shape`` is empty)."""
    return tuple(getattr(param, "ds_shape", param.shape))


def applied_optimizer_steps(engine) -> float:
    """Adam's step count (bias correction), the same for every parameter here."""
    for state in base_optimizer(engine).state.values():
        if "step" in state:
            return float(state["step"])
    return 0.0


def zero0_parameter_names(engine) -> list[str]:
    """Names in the order of the torch optimizer's state indices (ZeRO 0), saved next to its state so
    a reader maps moments to names without rebuilding the param groups."""
    names = {id(p): n for n, p in engine.module.named_parameters()}
    return [names[id(p)] for group in base_optimizer(engine).param_groups for p in group["params"]]


def get_adam_moments(engine, name: str, param: nn.Parameter) -> dict[str, torch.Tensor] | None:
    """Full fp32 exp_avg / exp_avg_sq of one parameter (collective under ZeRO-3: every rank calls it)."""
    if is_managed(param):
        from deepspeed.utils import safe_get_full_optimizer_state

        values = {key: safe_get_full_optimizer_state(param, key) for key in MOMENT_KEYS}
        if any(v is None for v in values.values()):
            return None
        return {key: v.detach().float().cpu().reshape(full_shape(param)) for key, v in values.items()}
    state = base_optimizer(engine).state.get(param)
    if not state or "exp_avg" not in state:
        return None
    return {key: state[key].detach().float().cpu().clone() for key in MOMENT_KEYS}


def all_adam_moments(engine) -> Moments:
    """Every parameter's full moments and the step, by name, on every rank (collective)."""
    step = torch.tensor(applied_optimizer_steps(engine))
    _link_optimizer_state(engine)
    moments = {}
    for name, param in engine.module.named_parameters():
        entry = get_adam_moments(engine, name, param)
        if entry is not None:
            moments[name] = {**entry, "step": step.clone()}
    return moments


def _link_optimizer_state(engine) -> None:
    """ZeRO 1/2 and the bf16 optimizer map parameters onto their flat Adam state lazily; (re)link now.

    DeepSpeed links every param group after stepping the *first* one, when the other groups have no
    Adam state yet, and never again: their fragments stay empty (0.19.8: "exp_avg not found in
    optimizer state fragment"). Clearing its flag makes the link see the state as it is."""
    link = getattr(engine.optimizer, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:
        if hasattr(engine.optimizer, "_hp_optimizer_states_linked"):
            engine.optimizer._hp_optimizer_states_linked = False
        link()


def set_adam_moments(engine, moments: Moments) -> None:
    """Per-parameter exp_avg/exp_avg_sq and the step, into whatever optimizer DeepSpeed built.
    Parameters without an entry (identity layers) start at zero moments with the same step."""
    from deepspeed.utils import safe_set_full_optimizer_state

    step = float(next(iter(moments.values()))["step"]) if moments else 0.0
    base = base_optimizer(engine)
    # torch creates Adam state lazily at the first step; create it now. ZeRO-3 swaps its flat fp32
    # partitions into the param groups only during step(), so they are listed separately.
    flats = [p for group in base.param_groups for p in group["params"]]
    flats += list(getattr(engine.optimizer, "fp32_partitioned_groups_flat", []))
    for flat in flats:
        if not base.state[flat]:
            base.state[flat] = {
                "step": torch.tensor(step),
                "exp_avg": torch.zeros_like(flat),
                "exp_avg_sq": torch.zeros_like(flat),
            }
    _link_optimizer_state(engine)
    for name, param in engine.module.named_parameters():
        entry = moments.get(name) or {k: torch.zeros(full_shape(param)) for k in MOMENT_KEYS}
        if is_managed(param):
            for key in MOMENT_KEYS:
                safe_set_full_optimizer_state(param, entry[key].to(param.device, torch.float32), key)
        else:  # ZeRO 0 in fp32: torch's optimizer holds per-parameter state directly
            base.state[param] = {
                "step": torch.tensor(step),
                "exp_avg": entry["exp_avg"].to(param).clone(),
                "exp_avg_sq": entry["exp_avg_sq"].to(param).clone(),
            }
    for state in base.state.values():
        state["step"] = torch.tensor(step) if torch.is_tensor(state.get("step")) else step


def gathered(params: list[nn.Parameter]):
    """Context in which ZeRO-3 partitioned ``params`` are whole on every rank (read-only)."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def is_partitioned(param: nn.Parameter) -> bool:
    """A ZeRO-3 parameter: each rank holds one flat partition (``ds_tensor``), padded at the end."""
    return hasattr(param, "ds_tensor")


def local_data(param: nn.Parameter) -> torch.Tensor:
    """The data this rank owns: its ZeRO-3 partition, else the whole tensor."""
    return param.ds_tensor.data if is_partitioned(param) else param.data


def partition_numel(param: nn.Parameter) -> int:
    return int(param.ds_tensor.ds_numel)


def full_numel(param: nn.Parameter) -> int:
    return int(getattr(param, "ds_numel", param.numel()))


def convert_to_universal(folder: Path, universal: Path) -> str | None:
    """Run ``ds_to_universal`` on ``folder``; returns None on success, else its last error line."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            "--input_folder",
            str(folder),
            "--output_folder",
            str(universal),
            "--num_extract_workers",
            "1",
            "--num_merge_workers",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["no output"])[-1]


def universal_checkpoint_info() -> dict[str, Any]:
    """The client state ``ds_to_universal`` requires in a checkpoint it converts."""
    from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

    return {UNIVERSAL_CHECKPOINT_INFO: {}}


def read_universal_moment(path: Path, shape: torch.Size) -> torch.Tensor:
    """One ``zero/<name>/<key>.pt`` of a universal checkpoint: ZeRO 1/2 store {"param": tensor,
    "cat_dim": ...}, ZeRO-3 a flat tensor."""
    value = torch.load(path, weights_only=False)
    value = value["param"] if isinstance(value, dict) else value
    return value.float().reshape(shape)


def zero_stage(ds_config: dict[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))
