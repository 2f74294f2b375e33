"""Where the tests find the third-party dev sets (../shared/eval/dev, read in place, never copied here).

Outside CI a checkout may lack them, so the tests that read them skip with that reason; in CI (``CI`` set)
they are always there, so a missing file fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "dev"
needs_dev = pytest.mark.skipif(not DEV.exists() and not os.environ.get("CI"),
                               reason="../shared/eval/dev is not checked out here")
