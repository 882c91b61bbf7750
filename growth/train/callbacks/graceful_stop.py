"""Stop after the current optimizer step when the run is told to (SIGTERM, SIGINT, its launcher's end;
``growth/distributed/stop_request.py``), on every rank at the same step, with a checkpoint of it.

After each step every rank asks ``agree_on_stop`` (one all-reduce of a single number), so a signal
that reached one rank stops them all after the same step. The step is saved unless a checkpoint of
it exists already (the checkpointer's own save at a save interval, or a growth point); the
checkpointer's checks apply (a step with non-finite weights is not saved, and ``latest`` stays on
the last good checkpoint, which the run then names). The loop ends; ``train()`` prints the line and
``main()`` exits with the request's code. Requests stay deferred after the loop (a signal while the
summary prints changes nothing: the run is complete) until ``main()`` gives the signals back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from growth.checkpoint import resume_checkpoint, tag_for
from growth.checkpoint.layout import is_complete
from growth.distributed import stop_request
from growth.distributed.stop_request import StopRequest
from growth.train.callback import Callback
from growth.train.callbacks.checkpointer import Checkpointer


@dataclass(frozen=True)
class Stopped:
    request: StopRequest
    step: int
    checkpoint: Path | None  # the checkpoint to continue from (None: nothing saved yet)

    def line(self, continue_with: str) -> str:
        saved = str(self.checkpoint) if self.checkpoint is not None else "none yet (nothing to continue from)"
        return f"stopped by {self.request.reason} at step {self.step}; checkpoint: {saved}; continue with: {continue_with}"


class GracefulStop(Callback):
    def __init__(self, continue_with: str):
        self.continue_with = continue_with

    def pre_step(self, trainer) -> None:
        stop_request.defer(
            True,
            f"stopped at once by a second {{signal}} in step {trainer.state.step + 1}: nothing is published "
            f"half-way (checkpoints/latest names the last complete checkpoint); continue with: {self.continue_with}",
        )

    def post_step(self, trainer, result) -> None:
        request = stop_request.agree_on_stop(trainer.engine.device)
        if request is None or trainer.is_last_step:  # the last step ends the run anyway, saved
            return
        trainer.stopped = Stopped(request, trainer.state.step, self.checkpoint(trainer))

    def checkpoint(self, trainer) -> Path | None:
        """A complete checkpoint of this step: the one saved already, or a new one (collective)."""
        checkpointer = trainer.callback(Checkpointer)
        if checkpointer is None:
            return None
        here = checkpointer.root / tag_for(trainer.state.step)
        if is_complete(here):
            return here
        return checkpointer.save(trainer) or resume_checkpoint(checkpointer.root)[0]
