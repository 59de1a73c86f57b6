"""Simulated failures for resume tests: a Trainer callback that "kills" the job after a given optimizer step."""

from __future__ import annotations

from transformers import TrainerCallback


class Crash(RuntimeError):
    """Raised by :class:`CrashAt`; tests catch exactly this, so a real error still fails them."""


class CrashAt(TrainerCallback):
    """Raises :class:`Crash` at the end of optimizer step ``step`` (after that step's checkpoint, if one is due)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"simulated kill at step {self.step}")
