"""The spawn harness itself: per-rank log prefixes, a rank's exception reaches the test, the timeout fires."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from torch.multiprocessing import ProcessRaisedException

from tests.support.distributed import PrefixedStream, run_distributed

pytestmark = pytest.mark.distributed


def chatty_job(world, marker: str) -> None:
    print(f"hello {marker}\nsecond line", flush=True)
    print("partial", end="")  # no newline: still prefixed when the harness flushes at exit
    import sys

    sys.stderr.write(f"to stderr {marker}\n")


def failing_job(world) -> None:
    if world.rank == 1:
        raise ValueError(f"rank {world.rank} broke on purpose")
    time.sleep(120)  # rank 0 must be terminated by the harness, not wait out the sleep


def sleeping_job(world, folder: str) -> None:
    Path(folder, f"rank{world.rank}.pid").write_text(str(os.getpid()))
    time.sleep(300)


def test_prefixed_stream_prefixes_whole_lines():
    import io

    out = io.StringIO()
    stream = PrefixedStream(out, "[rank 3] ")
    stream.write("a\nb")
    stream.write("c\n\n")
    assert out.getvalue() == "[rank 3] a\n[rank 3] bc\n[rank 3] \n"
    stream.write("tail")
    stream.flush()
    assert out.getvalue().endswith("[rank 3] tail")


def test_every_line_is_prefixed_with_its_rank(capfd):
    run_distributed(chatty_job, 2, "xyz")
    out, err = capfd.readouterr()
    for rank in (0, 1):
        # ranks write concurrently: each line is whole and prefixed, the ranks' lines may interleave
        assert f"[rank {rank}] hello xyz\n" in out and f"[rank {rank}] second line\n" in out
        assert f"[rank {rank}] partial" in out
        assert f"[rank {rank}] to stderr xyz\n" in err
    assert "\nhello" not in out and not out.startswith("hello")


def test_a_rank_exception_is_reported_with_its_message(capfd):
    start = time.monotonic()
    with pytest.raises(ProcessRaisedException, match="ValueError: rank 1 broke on purpose") as raised:
        run_distributed(failing_job, 2)
    assert raised.value.error_index == 1
    assert time.monotonic() - start < 90  # rank 0 was stopped, not waited for
    err = capfd.readouterr().err
    assert "[rank 1] Traceback (most recent call last):" in err
    assert "[rank 1] ValueError: rank 1 broke on purpose" in err


def test_the_timeout_kills_every_rank_and_names_the_function(tmp_path):
    start = time.monotonic()
    with pytest.raises(
        TimeoutError, match=r"tests\.distributed\.test_harness\.sleeping_job.*timed out after 5 s"
    ):
        run_distributed(sleeping_job, 2, str(tmp_path), timeout_s=5)
    assert time.monotonic() - start < 30
    for pid_file in tmp_path.glob("rank*.pid"):  # the ranks that got as far as fn are gone
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
