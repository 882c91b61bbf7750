"""Fault-injection callbacks for the tests: they break a run through the loop's own hooks (a
forward hook on the network, a hook before a checkpoint is published), not by patching modules."""

from __future__ import annotations

import torch

from growth.train.callback import Callback


class NaNLoss(Callback):
    """Rank ``rank`` computes non-finite logits during the given (1-based) optimizer steps."""

    def __init__(self, steps: list[int], rank: int):
        self.steps, self.rank = set(steps), rank
        self.handle = None

    def pre_step(self, trainer) -> None:
        if trainer.state.step + 1 in self.steps and trainer.world.rank == self.rank:
            self.handle = trainer.engine.module.register_forward_hook(
                lambda module, args, out: out * float("nan")
            )

    def post_step(self, trainer, result) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class KillDuringSave(Callback):
    """Die (as if killed) while writing checkpoint number ``nth``: after every file, before ``latest``."""

    def __init__(self, nth: int):
        self.nth, self.saves = nth, 0

    def pre_publish_checkpoint(self, trainer, folder) -> None:
        self.saves += 1
        if self.saves == self.nth:
            raise KeyboardInterrupt("killed during save")


class WeightRecorder(Callback):
    """Consolidated weights after every step (collective under ZeRO-3: all ranks call it)."""

    def __init__(self):
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def post_step(self, trainer, result) -> None:
        from growth.checkpoint import consolidated_state_dict

        self.snapshots.append(consolidated_state_dict(trainer.engine, trainer.world))


class SelfKill(Callback):
    """``kill -9`` this process, as the OOM killer or a preempting scheduler would, at one point of
    the run (rank ``rank`` only; the launcher then takes the other ranks down):

    - ``"pre_step"`` / ``"post_step"``: at optimizer step ``step`` (1-based);
    - ``"pre_publish"``: in save number ``nth``, when every file is written, before ``complete``;
    - ``"mid_save"``: in the save of optimizer step ``step``, once ``fraction`` of the bytes the
      previous checkpoint holds are on disk (a thread watches the folder grow): inside the writes of
      DeepSpeed's files, the RNG states, the EMA or the consolidated weights."""

    def __init__(self, where: str, step: int = 0, nth: int = 1, fraction: float = 0.5, rank: int = 0):
        assert where in ("pre_step", "post_step", "pre_publish", "mid_save"), where
        self.where, self.step, self.nth, self.fraction, self.rank = where, step, nth, fraction, rank
        self.saves = 0

    def _kill(self) -> None:
        import os
        import signal
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def _mine(self, trainer) -> bool:
        return trainer.world.rank == self.rank

    def pre_step(self, trainer) -> None:
        if not self._mine(trainer) or trainer.state.step + 1 != self.step:
            return
        if self.where == "pre_step":
            self._kill()
        if self.where == "mid_save":
            self._watch(trainer)

    def _watch(self, trainer) -> None:
        import threading
        import time

        from growth.checkpoint import complete_folders, tag_for
        from growth.checkpoint.verify import read_manifest
        from growth.train.callbacks import Checkpointer

        root = trainer.callback(Checkpointer).root
        done = complete_folders(root)
        files = read_manifest(done[-1]) if done else None
        # Without an earlier checkpoint to measure, a small one: the tiny test models write ~0.8 MB.
        threshold = self.fraction * (sum(size for size, _ in files.values()) if files else 200_000)
        folder, armed = root / tag_for(self.step), time.time() - 0.01

        def written() -> int:
            """Bytes this save has written (a folder a killed save left is older: not counted)."""
            total = 0
            for path in list(folder.glob("*")) if folder.is_dir() else []:
                try:
                    stat = path.stat()
                except FileNotFoundError:  # a temporary renamed meanwhile
                    continue
                total += stat.st_size if stat.st_mtime >= armed else 0
            return total

        def watch() -> None:
            while written() < threshold:
                time.sleep(0.0005)
            self._kill()

        threading.Thread(target=watch, daemon=True).start()

    def pre_publish_checkpoint(self, trainer, folder) -> None:
        self.saves += 1
        if self.where == "pre_publish" and self._mine(trainer) and self.saves == self.nth:
            self._kill()

    def post_step(self, trainer, result) -> None:
        if self.where == "post_step" and self._mine(trainer) and trainer.state.step == self.step:
            self._kill()


class Stall(Callback):
    """Sleep ``seconds`` before optimizer step ``step`` on every rank: a slow step that keeps a run
    alive (e.g. while a test launches a second run on its directory)."""

    def __init__(self, step: int, seconds: float):
        self.step, self.seconds = step, seconds

    def pre_step(self, trainer) -> None:
        import time

        if trainer.state.step + 1 == self.step:
            time.sleep(self.seconds)


class RaiseAt(Callback):
    """Rank ``rank`` alone fails with a ConfigError after optimizer step ``step`` (the other ranks
    go on into the next step's collectives): what a rank-local check failing mid-run looks like."""

    def __init__(self, step: int, rank: int, message: str):
        self.step, self.rank, self.message = step, rank, message

    def post_step(self, trainer, result) -> None:
        from growth.config import ConfigError

        if trainer.state.step == self.step and trainer.world.rank == self.rank:
            raise ConfigError(self.message)


class Pace(Callback):
    """Sleep ``seconds`` before every optimizer step: a run slow enough for a signal to land at a
    random moment inside its loop (sleeping changes no number)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def pre_step(self, trainer) -> None:
        import time

        time.sleep(self.seconds)


class LossLog(Callback):
    """Rank 0 appends ``step loss`` (the float's exact ``repr``) for every applied step to ``path``, so
    the losses of a run stopped and continued can be laid over an uninterrupted run's."""

    def __init__(self, path: str):
        self.path = path

    def post_step(self, trainer, result) -> None:
        if trainer.world.is_main and result.applied:
            with open(self.path, "a") as handle:
                handle.write(f"{trainer.state.step} {result.loss!r}\n")


class StallInSave(Callback):
    """Sleep ``seconds`` in the save a stop request asked for (``growth/distributed/stop_request.py``),
    after its files are written and before ``complete`` and ``latest`` (rank 0): a window in which a
    second signal lands inside that save."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def pre_publish_checkpoint(self, trainer, folder) -> None:
        import time

        from growth.distributed import stop_request

        if stop_request.requested() is not None:
            time.sleep(self.seconds)
