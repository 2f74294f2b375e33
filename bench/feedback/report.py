"""Figures from replays: F1 by number of judgements, the change one judgement makes, tables, JSON and a plot.

The headline figure is F1 on the fixed evaluation tail, the same items at every checkpoint. F1 on "the rest
of the stream" (every item after the point reached) is reported beside it, but each checkpoint measures a
different set of items, so its rows are not comparable with one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.feedback.replay import Point, Trace

GOAL_AFTER = 20
GOAL_GAIN = 0.05
KINDS = ("relevant", "not_relevant", "miss")
SPANS = ("tail", "rest")


@dataclass(frozen=True)
class SetResult:
    """Every replay of one labelled stream."""

    name: str
    title: str
    topics: list[str]
    traces: list[Trace]
    checkpoints: list[int]
    limit: int


def _point(trace: Trace, topic: str, n: int) -> Point | None:
    pts = trace.points[topic]
    return pts[n] if n < len(pts) else None


def _macro(trace: Trace, topics: Sequence[str], n: int, span: str) -> dict[str, float] | None:
    """Mean P, R, F1 over the topics after ``n`` judgements each; None when a topic never got that far."""
    pts = [_point(trace, t, n) for t in topics]
    if any(p is None for p in pts):
        return None
    figs = [getattr(p, span) for p in pts if p is not None]
    if any(f is None for f in figs):
        return None
    return {k: float(np.mean([getattr(f, k) for f in figs])) for k in ("f1", "precision", "recall")}


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def _sd(values: Sequence[float]) -> float | None:
    return round(float(np.std(values)), 4) if len(values) > 1 else None


def checkpoint_rows(res: SetResult) -> list[dict[str, Any]]:
    """One row per checkpoint: macro figures averaged over replays, and each topic's."""
    rows = []
    for n in res.checkpoints:
        row: dict[str, Any] = {"judgements": n}
        for span in SPANS:
            macros = [m for tr in res.traces if (m := _macro(tr, res.topics, n, span)) is not None]
            row["runs"] = len(macros)
            row[span] = {k: _mean([m[k] for m in macros]) for k in ("f1", "precision", "recall")}
            row[span]["f1_sd"] = _sd([m["f1"] for m in macros])
        row["topics"] = {}
        for t in res.topics:
            pts = [p for tr in res.traces if (p := _point(tr, t, n)) is not None]
            row["topics"][t] = {"runs": len(pts), **{span: _mean([getattr(p, span).f1 for p in pts])
                                                     for span in SPANS}}
        rows.append(row)
    return rows


def curve(res: SetResult) -> list[float | None]:
    """Macro F1 on the tail after 0..limit judgements, averaged over the replays that got that far."""
    out = []
    for n in range(res.limit + 1):
        macros = [m["f1"] for tr in res.traces if (m := _macro(tr, res.topics, n, "tail")) is not None]
        out.append(_mean(macros))
    return out


def single_steps(res: SetResult) -> dict[str, Any]:
    """The change in tail F1 that one judgement makes: overall, by kind, and by its rank (1st, 2nd, ...).

    ``by_kind`` also holds ``first_not_relevant``: each topic's first false alarm judged in a replay (for a
    topic written without counter-examples, its first counter-example), counted in ``not_relevant`` too.
    """
    deltas: list[float] = []
    by_kind: dict[str, list[tuple[float, float, float]]] = {k: [] for k in (*KINDS, "first_not_relevant")}
    by_rank: dict[int, list[float]] = {}
    for tr in res.traces:
        for t in res.topics:
            pts = tr.points[t]
            false_alarms = 0
            for prev, cur in zip(pts, pts[1:], strict=False):
                d = (cur.tail.f1 - prev.tail.f1, cur.tail.precision - prev.tail.precision,
                     cur.tail.recall - prev.tail.recall)
                deltas.append(d[0])
                by_kind[cur.kind].append(d)
                if cur.kind == "not_relevant":
                    false_alarms += 1
                    if false_alarms == 1:
                        by_kind["first_not_relevant"].append(d)
                by_rank.setdefault(cur.n, []).append(d[0])
    rank_means = {k: float(np.mean(v)) for k, v in sorted(by_rank.items())}
    worst = min(rank_means.items(), key=lambda kv: kv[1]) if rank_means else None
    return {
        "judgements": len(deltas),
        "mean_delta_f1": _mean(deltas),
        "share_lowering": round(float(np.mean([d < 0 for d in deltas])), 4) if deltas else None,
        "share_raising": round(float(np.mean([d > 0 for d in deltas])), 4) if deltas else None,
        "by_kind": {k: {"count": len(v), "mean_delta_f1": _mean([x[0] for x in v]),
                        "mean_delta_precision": _mean([x[1] for x in v]),
                        "mean_delta_recall": _mean([x[2] for x in v])} for k, v in by_kind.items()},
        "by_rank": [round(rank_means[k], 4) for k in sorted(rank_means)],
        "ranks_with_negative_mean": sum(1 for v in rank_means.values() if v < 0),
        "worst_rank": None if worst is None else {"judgement": worst[0], "mean_delta_f1": round(worst[1], 4)},
    }


def gain(res: SetResult, after: int = GOAL_AFTER) -> dict[str, Any]:
    """Macro tail F1 after ``after`` judgements minus before any, per replay and on average."""
    per_run = []
    for tr in res.traces:
        a, b = _macro(tr, res.topics, 0, "tail"), _macro(tr, res.topics, after, "tail")
        if a is not None and b is not None:
            per_run.append(round(b["f1"] - a["f1"], 4))
    return {"after": after, "mean": _mean(per_run), "per_run": per_run, "runs_reached": len(per_run),
            "runs": len(res.traces)}


def summarize(res: SetResult) -> dict[str, Any]:
    """The ``--json`` object of one set (stable keys)."""
    steps, g = single_steps(res), gain(res)
    counts = {t: {k: sum(1 for tr in res.traces for p in tr.points[t] if p.kind == k) for k in KINDS}
              for t in res.topics}
    reload_ms = [ms for tr in res.traces for ms in tr.reload_ms]
    first = res.traces[0]
    return {
        "title": res.title,
        "items": first.items,
        "judged_part": first.tail_start,
        "tail_items": first.items - first.tail_start,
        "tail_positives": {t: round(float(np.mean([tr.points[t][0].tail.positives for tr in res.traces])), 1)
                           for t in res.topics},
        "runs": len(res.traces),
        "seeds": [tr.seed for tr in res.traces],
        "topics": res.topics,
        "checkpoints": checkpoint_rows(res),
        "curve_tail_f1": curve(res),
        "single_judgement": steps,
        "gain": g,
        "judgements_by_kind": counts,
        "judgements_reached": {t: [len(tr.points[t]) - 1 for tr in res.traces] for t in res.topics},
        "reload_ms": {"count": len(reload_ms),
                      "p50": round(float(np.median(reload_ms)), 2) if reload_ms else None,
                      "max": round(max(reload_ms), 2) if reload_ms else None},
        "seconds": round(sum(tr.seconds for tr in res.traces), 2),
        "goals": {
            "never_falls_on_average": None if steps["mean_delta_f1"] is None else steps["mean_delta_f1"] >= 0,
            "no_rank_falls_on_average": steps["ranks_with_negative_mean"] == 0 if steps["judgements"] else None,
            f"gain_after_{GOAL_AFTER}": None if g["mean"] is None else g["mean"] >= GOAL_GAIN,
        },
    }


def _f(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def tables(summaries: dict[str, dict[str, Any]], *, tail: float, miss_every: int) -> str:
    """The human-readable report."""
    out = [f"F1 at each topic's own threshold after n editor judgements per topic (every alert judged; a miss "
           f"reported in every {miss_every}th judgement slot)" if miss_every else
           "F1 at each topic's own threshold after n editor judgements per topic (every alert judged; no misses)",
           f"headline: the fixed evaluation tail = the last {tail:.0%} of each stream, never judged; 'rest' = the "
           "items after the point reached (a different set at each n: not comparable across rows)"]
    for name, s in summaries.items():
        pos = ", ".join(f"{t} {v:g}" for t, v in s["tail_positives"].items())
        out += ["", f"{name}: {s['title']}; {s['runs']} replay(s), tail {s['tail_items']} items "
                    f"(positives: {pos}); figures are macro over topics, mean over replays",
                f"{'n':>4} {'runs':>5} {'tail F1':>8} {'±sd':>6} {'P':>6} {'R':>6} {'dF1':>7} | "
                f"{'rest F1':>8} {'P':>6} {'R':>6}"]
        base = s["checkpoints"][0]["tail"]["f1"] if s["checkpoints"] else None
        for row in s["checkpoints"]:
            t, r = row["tail"], row["rest"]
            d = None if t["f1"] is None or base is None else t["f1"] - base
            out.append(f"{row['judgements']:>4} {row['runs']:>5} {_f(t['f1']):>8} {_f(t['f1_sd']):>6} "
                       f"{_f(t['precision']):>6} {_f(t['recall']):>6} {_f(d, '+.3f'):>7} | {_f(r['f1']):>8} "
                       f"{_f(r['precision']):>6} {_f(r['recall']):>6}")
        if len(s["topics"]) > 1:
            out.append("  per topic, tail F1 (mean over replays):")
            out.append(f"  {'n':>4} " + " ".join(f"{t[:13]:>13}" for t in s["topics"]))
            for row in s["checkpoints"]:
                out.append(f"  {row['judgements']:>4} " + " ".join(f"{_f(row['topics'][t]['tail']):>13}"
                                                                   for t in s["topics"]))
        reached = {t: (min(v), max(v)) for t, v in s["judgements_reached"].items()}
        short = {t: lo for t, (lo, hi) in reached.items() if lo < s["checkpoints"][-1]["judgements"]}
        if short:
            out.append("  judgements reached before the tail (fewest over replays): "
                       + ", ".join(f"{t} {v}" for t, v in short.items()))
    nw = max([8, *(len(name) for name in summaries)])
    out += ["", "what one judgement does to tail F1 (mean over every judgement of every topic and replay)",
            f"{'set':<{nw}} {'judged':>6} {'mean dF1':>9} {'relevant':>9} {'false al.':>9} {'miss':>8} "
            f"{'<0':>6} {'>0':>6} {'worst n':>13} {f'after {GOAL_AFTER}':>9}"]
    for name, s in summaries.items():
        st, k = s["single_judgement"], s["single_judgement"]["by_kind"]
        wr = st["worst_rank"]
        worst = "-" if wr is None else f"{wr['judgement']}: {wr['mean_delta_f1']:+.3f}"
        kinds = " ".join(f"{_f(k[kind]['mean_delta_f1'], '+.4f'):>{w}}" for kind, w in zip(KINDS, (9, 9, 8),
                                                                                          strict=True))
        out.append(f"{name:<{nw}} {st['judgements']:>6} {_f(st['mean_delta_f1'], '+.4f'):>9} {kinds} "
                   f"{_f(st['share_lowering'], '.0%'):>6} "
                   f"{_f(st['share_raising'], '.0%'):>6} {worst:>13} {_f(s['gain']['mean'], '+.3f'):>9}")
    out += ["", "by kind of judgement: count, mean change in tail F1 / precision / recall"]
    for name, s in summaries.items():
        parts = []
        for kind, label in (("relevant", "relevant"), ("not_relevant", "false alarm"),
                            ("first_not_relevant", "first false alarm"), ("miss", "miss")):
            k = s["single_judgement"]["by_kind"][kind]
            parts.append(f"{label} {k['count']}: {_f(k['mean_delta_f1'], '+.3f')} / "
                         f"{_f(k['mean_delta_precision'], '+.3f')} / {_f(k['mean_delta_recall'], '+.3f')}")
        out.append(f"  {name}: " + "; ".join(parts))
    out += ["", f"goals: F1 never falls on average after a judgement; rises >= {GOAL_GAIN:+.2f} after {GOAL_AFTER}"]
    for name, s in summaries.items():
        g = s["goals"]
        ranks = s["single_judgement"]["ranks_with_negative_mean"]
        out.append(f"  {name}: mean change per judgement {_f(s['single_judgement']['mean_delta_f1'], '+.4f')} "
                   f"({_met(g['never_falls_on_average'])}; {ranks} of the judgement ranks 1..n have a negative "
                   f"mean); after {GOAL_AFTER}: {_f(s['gain']['mean'], '+.3f')} "
                   f"({_met(g[f'gain_after_{GOAL_AFTER}'])})")
    return "\n".join(out)


def _met(ok: bool | None) -> str:
    return "not reached" if ok is None else ("met" if ok else "NOT met")


def plot(results: Sequence[SetResult], summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """Tail F1 against judgements for each set (mean, each replay, each topic) and rest-of-stream F1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.5), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        s = summaries[res.name]
        xs = list(range(res.limit + 1))
        for tr in res.traces:
            ys = [m["f1"] if (m := _macro(tr, res.topics, n, "tail")) else np.nan for n in xs]
            ax.plot(xs, ys, color="0.8", lw=0.8)
        if len(res.topics) > 1:
            for t in res.topics:
                ys = []
                for n in xs:
                    got = [p.tail.f1 for tr in res.traces if (p := _point(tr, t, n)) is not None]
                    ys.append(float(np.mean(got)) if got else np.nan)
                ax.plot(xs, ys, lw=0.9, alpha=0.7, label=f"{t} (tail)")
        mean = [np.nan if v is None else v for v in s["curve_tail_f1"]]
        ax.plot(xs, mean, color="k", lw=2.2, label="tail F1 (headline)" + (", macro" if len(res.topics) > 1 else ""))
        rest = [(row["judgements"], row["rest"]["f1"]) for row in s["checkpoints"] if row["rest"]["f1"] is not None]
        if rest:
            ax.plot(*zip(*rest, strict=True), "o--", color="tab:red", label="rest of stream (not comparable)")
        ax.set_title(f"{res.name}: {s['runs']} replay(s)", fontsize=10)
        ax.set_xlabel("judgements per topic")
        ax.set_ylabel("F1 at the topic's threshold")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
