"""Progress of the optimisation steps inside a stage.

Each fitting stage owns a :class:`StepProgress` (the base class reports
nothing) and asks it for a callback per optimisation, which
:func:`fitting.optim.minimize` calls after every step. ``fitting.run`` gives
the stages a :class:`TqdmStepProgress`, a second progress bar under the
faces bar; ``--quiet`` leaves the silent base class in place.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["StepCallback", "StepProgress", "TqdmStepProgress"]

#: ``callback(step, record)`` after each optimisation step (``record``: term -> per-face values).
StepCallback = Callable[[int, dict], None]


class StepProgress:
    """Reports nothing; the interface of step progress."""

    def track(self, label: str, total: int) -> StepCallback | None:
        """A callback for an optimisation of ``total`` steps named ``label`` (None: nothing to report)."""
        return None

    def close(self) -> None:
        """End any bar still shown."""


class TqdmStepProgress(StepProgress):
    """One transient tqdm bar per optimisation, below the faces bar.

    Args:
        position: the bar's line (1 under a faces bar at 0).
    """

    def __init__(self, position: int = 1):
        self.position = position
        self._bar = None

    def track(self, label: str, total: int) -> StepCallback:
        from tqdm import tqdm

        self.close()
        self._bar = bar = tqdm(total=total, desc=label, unit="step", leave=False, position=self.position,
                               dynamic_ncols=True)

        def on_step(step: int, record: dict) -> None:
            bar.update(1)
            if step + 1 >= total:
                self.close()

        return on_step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
