"""A worker process whose consumer stops being a group member while it keeps polling (the demo's alerts worker).

Usage: python liveness_child.py SETTINGS_JSON TOPIC GROUP OUT_DIR

The first process started with a given OUT_DIR goes deaf: once it holds partitions, its client's heartbeat
task is ended (standing in for however kafka-python's heartbeat stops; see docs/kafka-python-coordinator.md)
and its handler fails as if Redis were down, so it never commits. The client keeps believing it is a stable
member, the broker evicts it, and its loop polls on. Later processes consume normally and write each value
they handled to OUT_DIR/handled.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from wirewatch import bus
from wirewatch.settings import load_settings


def main() -> None:
    settings_json, topic, group, out_dir = sys.argv[1:5]
    settings = load_settings(None, **json.loads(settings_json))
    out = Path(out_dir)
    marker = out / "deaf"
    deaf = not marker.exists()
    if deaf:
        marker.write_text(str(os.getpid()))
    producer = bus.Producer(settings, client_id="child")
    loop: bus.ConsumerLoop[bytes]

    def handle(batch: list[bus.Consumed[bytes]]) -> None:
        if deaf:
            consumer = loop._consumer
            assert consumer is not None
            consumer._coordinator._close_heartbeat()
            with (out / "deaf-since").open("a") as fh:
                fh.write(f"{len(batch)}\n")
            raise ConnectionError("redis unavailable (simulated)")
        with (out / "handled").open("a") as fh:
            fh.writelines(f"{c.value.decode()}\n" for c in batch)

    loop = bus.ConsumerLoop(settings, topics=[topic], group=group, decode=lambda b: b, handle=handle,
                            producer=producer,
                            config=bus.LoopConfig(max_wait_ms=200, session_timeout_ms=6000,
                                                  heartbeat_interval_ms=2000, max_backoff_s=2.0))
    loop.install_signal_handlers()
    loop.run()


if __name__ == "__main__":
    main()
