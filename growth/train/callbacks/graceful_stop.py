"""Stop after the current optimizer step when the run is told to (SIGTERM, SIGINT, its launcher's end;
``growth/distributed/stop_request.py``), on every rank at the same step, with a checkpoint of it.

After each step every rank asks ``agree_on_stop`` (one all-reduce of a single number), so a signal
that reached one rank stops them all after the same step. The callbacks hear ``on_stop_requested``: the
checkpointer saves the step unless a checkpoint of it exists already (its own save at a save interval,
or a growth point); the checkpointer's checks apply (a step with non-finite weights is not saved, and ``latest`` stays on
the last good checkpoint, which the run then names). The loop ends; ``train()`` prints the line and
``main()`` exits with the request's code. Requests stay deferred after the loop (a signal while the
summary prints changes nothing: the run is complete) until ``main()`` gives the signals back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from growth.distributed import stop_request
from growth.distributed.stop_request import StopRequest
from growth.train.callback import Callback


@dataclass(frozen=True)
class Stopped:
    request: StopRequest
    step: int
    checkpoint: Path | None  # the checkpoint to continue from (None: nothing saved yet)

    def line(self, continue_with: str) -> str:
        saved = str(self.checkpoint) if self.checkpoint is not None else "none yet (nothing to continue from)"
        return f"stopped by {self.request.reason} at step {self.step}; checkpoint: {saved}; continue with: {continue_with}"


class GracefulStop(Callback):
    priority = -100  # last: the step it stops at is logged and saved by the others first

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
        trainer.call("on_stop_requested")  # the checkpointer saves this step (collective)
        trainer.stopped = Stopped(request, trainer.state.step, trainer.last_checkpoint)
