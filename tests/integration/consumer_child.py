"""A consumer process for kill tests: consumes one topic as a group and records what it handled.

Usage: python consumer_child.py SETTINGS_JSON TOPIC GROUP OUT_FILE MODE
MODE ``hang``: write each batch's offsets to OUT_FILE, then block forever inside the handler (before commit).
MODE ``commit``: write offsets, let the loop commit, then write ``committed`` after the commit and keep polling.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from wirewatch import bus
from wirewatch.settings import load_settings


def main() -> None:
    settings_json, topic, group, out_file, mode = sys.argv[1:6]
    settings = load_settings(None, **json.loads(settings_json))
    out = Path(out_file)
    producer = bus.Producer(settings, client_id="child")

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        with out.open("a") as fh:
            for c in batch:
                fh.write(f"{c.partition}:{c.offset}:{c.value.decode()}\n")
            fh.flush()
        if mode == "hang":
            time.sleep(3600)

    loop = bus.ConsumerLoop(settings, topics=[topic], group=group, decode=lambda b: b, handle=handle,
                            producer=producer, config=bus.LoopConfig(batch_size=1000, max_wait_ms=500))
    if mode == "commit":
        original = loop._commit

        def commit_then_mark(consumer, records):  # type: ignore[no-untyped-def]
            original(consumer, records)
            with out.open("a") as fh:
                fh.write("committed\n")

        loop._commit = commit_then_mark  # type: ignore[method-assign]
    loop.install_signal_handlers()
    loop.run()


if __name__ == "__main__":
    main()
