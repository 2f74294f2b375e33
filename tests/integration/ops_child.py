"""Child processes for the supervisor tests.

Usage: python ops_child.py MODE MARKER_DIR
MODE ``crash``: append a start line to MARKER_DIR/starts, then exit 3 after 50 ms.
MODE ``drain``: on SIGTERM take 300 ms to "finish the batch", write MARKER_DIR/drained-<pid>, exit 0.
MODE ``stubborn``: ignore SIGTERM; only SIGKILL ends it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def main() -> None:
    mode, marker_dir = sys.argv[1], Path(sys.argv[2])
    marker_dir.mkdir(parents=True, exist_ok=True)
    with (marker_dir / "starts").open("a") as fh:
        fh.write(f"{mode} {os.getpid()} {time.monotonic():.4f}\n")
    if mode == "crash":
        time.sleep(0.05)
        sys.exit(3)
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    if mode == "drain":
        signal.signal(signal.SIGTERM, on_term)
    elif mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (marker_dir / f"ready-{os.getpid()}").write_text("ready")
    while not stopping:
        time.sleep(0.02)
    time.sleep(0.3)
    (marker_dir / f"drained-{os.getpid()}").write_text("drained")
    sys.exit(0)


if __name__ == "__main__":
    main()
