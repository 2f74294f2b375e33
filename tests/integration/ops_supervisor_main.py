"""A supervisor process for the signal tests: supervises ``ops_child.py MODE DIR`` for each MODE given.

Usage: python ops_supervisor_main.py DRAIN_TIMEOUT_S MARKER_DIR MODE [MODE...]; exits with Supervisor.run()'s code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wirewatch.log import configure
from wirewatch.ops.supervisor import Backoff, Child, Supervisor

CHILD = Path(__file__).with_name("ops_child.py")


def main() -> None:
    drain, marker_dir, modes = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
    configure("info", "json")
    children = [Child(f"{m}-{i}", (sys.executable, str(CHILD), m, marker_dir)) for i, m in enumerate(modes)]
    sup = Supervisor(children, backoff=Backoff(0.2, 1.0, 30.0), drain_timeout_s=drain)
    sup.install_signal_handlers()
    sys.exit(sup.run())


if __name__ == "__main__":
    main()
