"""The regression gate: per case, the same-run ratio (our median / sdpa-flash median) now vs the baseline.

Absolute milliseconds drift between runs and runners; the ratio to a dense flash kernel timed
minutes apart on the same GPU mostly does not, so that is what is gated (ms are reported).

Per case, ``change = new_ratio / base_ratio - 1``. With the case's tolerance ``tol``:
regression if ``change >= tol``; stale baseline (a win the baseline should record) if
``base_ratio / new_ratio - 1 >= tol``. ``tol`` is the entry's own ``tolerance`` when the
baseline file sets one, else ``max(floor, NOISE_K * noise)``: ``floor`` is ``--tolerance`` and
``noise`` the baseline's half p20-p80 range (relative) of both timings, summed. Changes are rounded to 1e-4,
far below timing noise, so "a 10% slowdown at 10% tolerance" is decided the same way on every
machine. A gated case that ran but has no valid time (error, wrong result, flash missing, or
its layout changed) is *missing*. Regressions, stale entries and missing cases fail the gate, and
so does a comparison that compared no case at all (an empty run, or another preset's baseline).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .cases import FLASH

GATED = ("sparse", "three-op")  # our kernels; the other providers are reference points
NOISE_K = 2.0
DEFAULT_TOLERANCE = 0.10
RESOLUTION = 4  # decimals a relative change is rounded to
COMPARED = ("pass", "regression", "stale")
FAILING = ("regression", "stale", "missing")


@dataclass
class Verdict:
    case_id: str
    verdict: str  # pass / regression / stale / missing / new / not_run
    base_ratio: float | None = None
    new_ratio: float | None = None
    change: float | None = None
    tolerance: float | None = None
    base_ms: float | None = None
    new_ms: float | None = None
    reason: str = ""


@dataclass
class Report:
    floor: float
    cases: list = field(default_factory=list)

    @property
    def counts(self) -> dict:
        out = {}
        for c in self.cases:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    @property
    def compared(self) -> int:
        """Cases whose ratio was actually set against the baseline's."""
        return sum(c.verdict in COMPARED for c in self.cases)

    @property
    def nothing_compared(self) -> str:
        """Why the gate compared no case ("" when it compared some): a gate that checked
        nothing must not pass, or an empty run or a wrong baseline would look green."""
        if self.compared:
            return ""
        if not any(c.verdict != "new" for c in self.cases):
            return "nothing compared: the baseline has no gated cases (sparse/three-op rows beside an sdpa-flash row)"
        counts = self.counts
        if not counts.get("missing"):
            return (f"nothing compared: none of the baseline's {counts.get('not_run', 0)} gated cases "
                    "is in this run (another preset or sweep?)")
        return f"nothing compared: all {counts['missing']} gated cases of this run are missing"

    @property
    def failed(self) -> bool:
        return bool(self.nothing_compared) or any(c.verdict in FAILING for c in self.cases)

    def to_dict(self) -> dict:
        return {"tolerance_floor": self.floor, "noise_k": NOISE_K, "passed": not self.failed,
                "problem": self.nothing_compared or None, "counts": self.counts,
                "cases": [asdict(c) for c in self.cases]}


def _spread(row: dict) -> float:
    """Half the p20-p80 range over the median: a timing's own jitter, tails excluded."""
    return (row["p80_ms"] - row["p20_ms"]) / (2 * row["median_ms"]) if row.get("median_ms") else 0.0


def ratios(rows: list[dict]) -> dict:
    """{case_id: (ratio, noise, row)} for every ok row of a gated provider with an ok flash row."""
    flash = {r["group_id"]: r for r in rows if r["provider"] == FLASH and r["status"] == "ok"}
    out = {}
    for r in rows:
        f = flash.get(r.get("group_id"))
        if r["provider"] in GATED and r["status"] == "ok" and f:
            out[r["case_id"]] = (r["median_ms"] / f["median_ms"], _spread(r) + _spread(f), r)
    return out


def gate_entries(doc: dict) -> dict:
    """The baseline's ``gate`` section, or one derived from its results."""
    if isinstance(doc.get("gate"), dict):
        return doc["gate"]
    return {cid: {"ratio": ratio, "noise": noise, "median_ms": row["median_ms"],
                  "layout_sha": row.get("layout_sha")}
            for cid, (ratio, noise, row) in ratios(doc["results"]).items()}


def _why_missing(row: dict | None, rows_by_group: dict) -> str:
    if row is None:
        return "no row"
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('reason', '')}".strip()
    flash = rows_by_group.get(row["group_id"])
    if flash is None:
        return "no sdpa-flash row in this group to take the ratio against"
    return f"sdpa-flash {flash['status']}: {flash.get('reason', '')}".strip()


def compare(base: dict, new: dict, floor: float = DEFAULT_TOLERANCE) -> Report:
    entries = gate_entries(base)
    rows = {r["case_id"]: r for r in new["results"]}
    flash_rows = {r["group_id"]: r for r in new["results"] if r["provider"] == FLASH}
    now = ratios(new["results"])
    report = Report(floor)
    for cid, e in sorted(entries.items()):
        v = Verdict(cid, "pass", base_ratio=e["ratio"], base_ms=e.get("median_ms"))
        row = rows.get(cid)
        if row is None:
            v.verdict, v.reason = "not_run", "not in this run's sweep"
        elif e.get("layout_sha") and row.get("layout_sha") and e["layout_sha"] != row["layout_sha"]:
            v.verdict, v.reason = "missing", "the preset's layout changed since the baseline; run --update-baseline"
        elif cid not in now:
            v.verdict, v.reason = "missing", _why_missing(row, flash_rows)
            v.new_ms = row.get("median_ms")
        else:
            ratio, _, _ = now[cid]
            v.new_ratio, v.new_ms = ratio, row["median_ms"]
            v.tolerance = e.get("tolerance") or max(floor, NOISE_K * e.get("noise", 0.0))
            v.change = round(ratio / e["ratio"] - 1.0, RESOLUTION)
            if v.change >= round(v.tolerance, RESOLUTION):
                v.verdict = "regression"
            elif round(e["ratio"] / ratio - 1.0, RESOLUTION) >= round(v.tolerance, RESOLUTION):
                v.verdict, v.reason = "stale", "faster than the baseline by more than the tolerance; update it"
        report.cases.append(v)
    for cid in sorted(set(now) - set(entries)):
        ratio, _, row = now[cid]
        report.cases.append(Verdict(cid, "new", new_ratio=ratio, new_ms=row["median_ms"],
                                    reason="not in the baseline"))
    return report


def make_baseline(new: dict, previous: dict | None = None) -> dict:
    """``new`` plus a ``gate`` section; entries and rows of cases this run did not cover are kept."""
    doc = dict(new)
    gate = dict(previous.get("gate") or gate_entries(previous)) if previous else {}
    ran = {r["case_id"] for r in new["results"]}
    gate = {cid: e for cid, e in gate.items() if cid not in ran}
    gate.update(gate_entries({"results": new["results"]}))
    kept = [r for r in (previous or {}).get("results", []) if r["case_id"] not in ran]
    doc["results"] = kept + list(new["results"])
    doc["gate"] = dict(sorted(gate.items()))
    if previous and isinstance(previous.get("config"), dict) and isinstance(new.get("config"), dict):
        doc["config"] = dict(new["config"])
        for key in ("presets", "preset_paths"):
            both = previous["config"].get(key, []) + new["config"].get(key, [])
            doc["config"][key] = list(dict.fromkeys(both))
    doc.pop("gate_report", None)
    return doc
