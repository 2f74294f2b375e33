"""The group watchdog does not count a broker outage as a worker's absence from its group (pure unit, fakes)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog

from wirewatch.ops import watchdog as watchdog_module
from wirewatch.ops.watchdog import GroupWatchdog
from wirewatch.settings import Settings

PID = 4242
GROUP = "test-classify"


@dataclass
class FakeSupervisor:
    restarted: list[tuple[str, str]] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        return {"classify": PID}

    def uptimes(self) -> dict[str, float]:
        return {"classify": 600.0}

    def restart(self, child: str, reason: str) -> None:
        self.restarted.append((child, reason))


@dataclass
class GroupInfo:
    client_ids: tuple[str, ...]
    topics: tuple[str, ...] = ()
    state: str = "Stable"


@dataclass
class LagRow:
    group: str
    lag: int


@dataclass
class FakeBroker:
    member: bool = True

    def describe(self, groups: list[str]) -> dict[str, GroupInfo]:
        ids = (f"wirewatch-classify-{socket.gethostname()}-{PID}",) if self.member else ()
        return {g: GroupInfo(ids) for g in groups}

    def lags(self, *args: Any) -> list[LagRow]:
        return [LagRow(GROUP, 7)]


def _watchdog(sup: FakeSupervisor) -> GroupWatchdog:
    return GroupWatchdog(Settings(), sup, role_groups={"classify": GROUP}, role_reads={"classify": ("t",)},
                         interval_s=5.0, stall_s=30.0)


def test_a_worker_absent_for_stall_s_with_lag_is_restarted() -> None:
    sup = FakeSupervisor()
    dog = _watchdog(sup)
    broker = FakeBroker()
    assert dog.check_once(broker, now=0.0) == []  # seen in its group
    broker.member = False
    assert dog.check_once(broker, now=29.0) == []
    assert dog.check_once(broker, now=31.0) == ["classify"]
    assert sup.restarted == [("classify", "stalled")]


def test_after_a_broker_outage_the_worker_gets_stall_s_from_the_brokers_return_to_rejoin() -> None:
    sup = FakeSupervisor()
    dog = _watchdog(sup)
    broker = FakeBroker()
    assert dog.check_once(broker, now=0.0) == []
    broker.member = False
    dog.broker_unreachable()  # checks failed from here on: the broker was down for 40 s
    assert dog.check_once(broker, now=40.0) == []  # back: 40 s since last seen, but the clock starts now
    assert dog.check_once(broker, now=69.0) == []
    assert sup.restarted == []
    assert dog.check_once(broker, now=71.0) == ["classify"]  # still absent 31 s after the broker's return


def test_a_check_that_fails_with_an_unexpected_error_is_logged_and_the_watchdog_keeps_checking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one check (here: a TypeError from the admin client) must not end the thread: a dead
    watchdog restarts nothing and says nothing."""
    calls = {"n": 0}

    class FlakyBroker(FakeBroker):
        def describe(self, groups: list[str]) -> dict[str, GroupInfo]:
            calls["n"] += 1
            if calls["n"] == 1:
                raise TypeError("'NoneType' object is not subscriptable")
            return super().describe(groups)

        def close(self) -> None:
            pass

    monkeypatch.setattr(watchdog_module, "Broker", lambda settings: FlakyBroker())
    dog = GroupWatchdog(Settings(), FakeSupervisor(), role_groups={"classify": GROUP},
                        role_reads={"classify": ("t",)}, interval_s=0.01, stall_s=30.0)
    with structlog.testing.capture_logs() as logs:
        dog.start()
        deadline = time.monotonic() + 10
        while dog.checks < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        dog.stop()
    assert dog.checks >= 2
    assert dog.last_view == {GROUP: {"members": [PID], "lag": 7, "state": "Stable"}}
    failed = [e for e in logs if e["event"] == "watchdog_check_failed"]
    assert failed and failed[0]["log_level"] == "error" and "TypeError" in failed[0]["error"]


def test_an_unexpected_error_in_every_other_check_does_not_hold_back_a_stalled_workers_restart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an unreachable broker restarts the absence clocks; a recurring bug in the check does not."""
    calls = {"n": 0}

    class EveryOtherCheckFails(FakeBroker):
        def describe(self, groups: list[str]) -> dict[str, GroupInfo]:
            calls["n"] += 1
            if calls["n"] % 2 == 0:
                raise TypeError("'NoneType' object is not subscriptable")
            return super().describe(groups)

        def close(self) -> None:
            pass

    started = time.monotonic()

    class JustStarted(FakeSupervisor):
        def uptimes(self) -> dict[str, float]:
            # never seen in its group: stall_s of grace after its start, then stall_s more
            return {"classify": time.monotonic() - started}

    monkeypatch.setattr(watchdog_module, "Broker", lambda settings: EveryOtherCheckFails(member=False))
    sup = JustStarted()
    dog = GroupWatchdog(Settings(), sup, role_groups={"classify": GROUP}, role_reads={"classify": ("t",)},
                        interval_s=0.01, stall_s=0.3)
    dog.start()
    deadline = time.monotonic() + 10
    while not sup.restarted and time.monotonic() < deadline:
        time.sleep(0.01)
    dog.stop()
    assert calls["n"] >= 4, "checks kept running"
    assert sup.restarted == [("classify", "stalled")]
