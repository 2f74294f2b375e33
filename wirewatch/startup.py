"""Stop signals while a worker starts: nothing is in flight yet, so SIGTERM or SIGINT end it cleanly.

A worker takes seconds to start (imports, a model to load, a group to join) and installs its own handlers
(finish the batch, commit, drain) only when it has something to finish. A supervisor or an orchestrator may
ask it to stop before that; with the default handlers it would die of the signal (status -15), which reads as
a crash. :func:`exit_cleanly_until_running` makes such a stop an ordinary exit with status 0.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StoppedWhileStarting(SystemExit):
    """Raised by the start-up handler: the process exits with status 0 (nothing was consumed or sent)."""

    def __init__(self, signum: int) -> None:
        super().__init__(0)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise StoppedWhileStarting(signum)


def exit_cleanly_until_running() -> None:
    """Install the start-up handlers (main thread only); the worker replaces them with its own once running."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
