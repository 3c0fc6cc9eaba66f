"""Ctrl-C (or a polite kill, SIGTERM) during training: finish the step, write a checkpoint, stop.

An interrupt that lands between `optimizer.step()` and the schedule's step would leave a state
no checkpoint should hold, so the first Ctrl-C only asks the loop to stop at the next step
boundary; a second one stops at once (and the last checkpoint written stays the one to resume).
Outside the main thread Python delivers no signals, so there the loop runs without the handler.

Outside the training loop (loading the model, preparing the data, evaluating) there is no step to
finish: `terminate_as_interrupt` makes SIGTERM what Ctrl-C is there, a KeyboardInterrupt, so a run
says how to resume whichever of the two stops it, at every phase.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by `train` after an interrupt; the run can be resumed from `checkpoint`."""

    def __init__(self, step: int, steps: int, checkpoint):
        super().__init__(f"interrupted after step {step} of {steps}; checkpoint: {checkpoint or 'none'}")
        self.step, self.steps, self.checkpoint = step, steps, checkpoint


class StopRequest:
    requested = False


@contextmanager
def stop_at_step_boundary(log: Callable[[str], None]):
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def on_signal(signum, frame):
        if request.requested:
            raise KeyboardInterrupt
        request.requested = True
        log(f"{signal.Signals(signum).name}: stopping after this step and writing a checkpoint (again: stop at once)")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt while inside (the training loop's own handler nests within)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
