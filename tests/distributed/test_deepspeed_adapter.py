"""The DeepSpeed seams: the supported version range (pinned in pyproject.toml too), SkippingAdamW, and the
environment its CPU op is built in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from growth.distributed.deepspeed_adapter import (
    SUPPORTED_DEEPSPEED,
    SkippingAdamW,
    UnsupportedDeepSpeed,
    check_deepspeed_version,
    configure_environment,
)


def test_the_installed_deepspeed_is_supported():
    check_deepspeed_version()  # raises UnsupportedDeepSpeed, with the pip command, outside the range


@pytest.mark.parametrize("version", ["0.14.9", "0.20.0", "1.0.0"])
def test_an_unsupported_version_fails_loudly(version):
    with pytest.raises(
        UnsupportedDeepSpeed, match=rf"DeepSpeed {re.escape(version)} is not supported.*pip install"
    ):
        check_deepspeed_version(version)


@pytest.mark.parametrize("version", ["0.15.0", "0.19.8", "0.19.8+cpu"])
def test_versions_inside_the_range_pass(version):
    assert check_deepspeed_version(version) == version


def test_pyproject_pins_the_same_range():
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    (low_major, low_minor), (high_major, high_minor) = SUPPORTED_DEEPSPEED
    assert f'"deepspeed>={low_major}.{low_minor},<{high_major}.{high_minor}"' in text


def test_skipping_adamw_leaves_weights_and_moments_on_a_non_finite_gradient():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = SkippingAdamW([weight], max_grad_norm=1.0, lr=0.1)
    weight.grad = torch.tensor([3.0, 4.0, 0.0])
    optimizer.step()
    assert optimizer._global_grad_norm == pytest.approx(5.0) and not optimizer.overflow
    after_first = weight.detach().clone()
    moments = {k: v.clone() for k, v in optimizer.state[weight].items()}
    weight.grad = torch.tensor([float("nan"), 1.0, 1.0])
    optimizer.step()
    assert optimizer.overflow
    assert torch.equal(weight.detach(), after_first)
    assert all(torch.equal(optimizer.state[weight][k], v) for k, v in moments.items())


def test_this_virtualenvs_ninja_comes_first_on_path(monkeypatch):
    """torch runs whichever ``ninja`` PATH gives; DeepSpeed installs one in the virtualenv (a dependency)."""
    tools = Path(sys.executable).parent
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", "/bin"]))
    configure_environment()
    configure_environment()  # once only
    assert os.environ["PATH"].split(os.pathsep) == [str(tools), "/usr/bin", "/bin"]
    assert shutil.which("ninja") == str(tools / "ninja")


def test_the_shm_op_is_not_rebuilt_whether_or_not_the_virtualenv_is_active():
    """``make`` builds the CPU op with a bare PATH (the system ninja, if any, first); a shell with the
    virtualenv activated has its ninja first. A build under one and a load under the other must find
    the same up-to-date library, not rebuild it."""
    tools = str(Path(sys.executable).parent)
    script = (
        "from growth.distributed.deepspeed_adapter import build_cpu_ops; from pathlib import Path; "
        "print((Path(build_cpu_ops()) / 'deepspeed_shm_comm' / 'deepspeed_shm_comm.so').stat().st_mtime_ns)"
    )
    stamps = [
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PATH": path},
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        ).stdout.split()[-1]
        for path in ("/usr/bin:/bin", f"{tools}:/usr/bin:/bin", "/usr/bin:/bin")
    ]
    assert stamps[0] == stamps[1] == stamps[2]
