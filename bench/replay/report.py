"""Summaries of replays over several seeds: the medians the paper reports, a table and a JSON record."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .harness import SeedResult


@dataclass(frozen=True)
class PolicySummary:
    """All seeds of one policy. Percentages are unallocated GPU % of the cluster."""

    policy: str
    seeds: tuple[SeedResult, ...]

    @property
    def median_at_100(self) -> float | None:
        return _median([r.at_100 for r in self.seeds])

    @property
    def median_at_130(self) -> float | None:
        return _median([r.at_130 for r in self.seeds])

    @property
    def placements_per_s(self) -> float:
        seconds = sum(r.seconds for r in self.seeds)
        decisions = sum(r.decisions for r in self.seeds)
        return decisions / seconds if seconds > 0 else float("inf")

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.seeds)

    def as_json(self) -> dict:
        return {
            "policy": self.policy,
            "unallocated_gpu_pct_at_100": _rounded(self.median_at_100),
            "unallocated_gpu_pct_at_130": _rounded(self.median_at_130),
            "per_seed": [{"seed": r.seed, "at_100": _rounded(r.at_100), "at_130": _rounded(r.at_130)}
                         for r in self.seeds],
            "placements_per_s": round(self.placements_per_s, 1),
        }


def replay_record(trace_name: str, gpus: int, summaries: Sequence[PolicySummary]) -> dict:
    """The JSON object the replay command prints last."""
    return {"trace": trace_name, "gpus": gpus, "results": [s.as_json() for s in summaries]}


def format_table(summaries: Sequence[PolicySummary]) -> str:
    """One row per policy: medians over seeds with their min-max, speed and placement time."""
    header = ("policy", "unalloc@100% median", "(min-max)", "unalloc@130% median", "(min-max)",
              "placements/s", "seconds")
    rows = [header]
    for s in summaries:
        rows.append((
            s.policy,
            _pct(s.median_at_100), _spread([r.at_100 for r in s.seeds]),
            _pct(s.median_at_130), _spread([r.at_130 for r in s.seeds]),
            f"{s.placements_per_s:,.0f}", f"{s.seconds:.1f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _spread(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"({min(present):.2f}-{max(present):.2f})" if present else "(n/a)"
