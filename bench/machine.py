"""The machine a benchmark ran on: CPU model, the instruction sets that move our figures, cores and load.

Absolute figures move 3-5x between CPUs (int8 matrix kernels gain most where VNNI or AMX exists), so every
``bench/`` command names the CPU beside its ratios. Read from ``/proc/cpuinfo``; elsewhere the model is
``unknown CPU`` and every flag is false.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The flags that matter to our kernels, by the names /proc/cpuinfo uses, with the label printed for each.
FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512vl": "AVX-512VL",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
}


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "unknown CPU", set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
            if flags and model != "unknown CPU":
                break
    return model, flags


def describe() -> dict[str, Any]:
    """The machine as one JSON-ready object: ``model``, ``flags`` (label -> bool), ``cpus``, ``load_avg``."""
    model, flags = _cpuinfo()
    return {"model": model, "flags": {label: name in flags for name, label in FLAGS.items()},
            "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}


def line(info: dict[str, Any] | None = None) -> str:
    """One human line naming the CPU, the flags it has and lacks, the cores and the load average."""
    info = info or describe()
    have = [k for k, v in info["flags"].items() if v]
    lack = [k for k, v in info["flags"].items() if not v]
    load = ", ".join(f"{x:.2f}" for x in info["load_avg"])
    return (f"CPU: {info['model']}, {info['cpus']} core(s); has {' '.join(have) or 'none of the flags'}"
            f"{'; lacks ' + ' '.join(lack) if lack else ''}; load average {load}")


@contextlib.contextmanager
def tables_to_stderr(enabled: bool) -> Iterator[None]:
    """With ``--json``, everything a benchmark prints goes to stderr, so stdout holds only the JSON object."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def dump(doc: dict[str, Any]) -> None:
    """Write ``doc`` (with ``cpu`` added when absent) as one JSON object on the real stdout."""
    doc.setdefault("cpu", describe())
    sys.__stdout__.write(json.dumps(doc, sort_keys=True, default=float) + "\n")  # type: ignore[union-attr]
    sys.__stdout__.flush()  # type: ignore[union-attr]


def report(as_json: bool, bench: Callable[[], dict[str, Any]]) -> None:
    """Run ``bench`` with its tables on stdout, or with ``as_json`` on stderr and its figures as one JSON object."""
    with tables_to_stderr(as_json):
        doc = bench()
    if as_json:
        dump(doc)
