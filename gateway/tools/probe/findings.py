"""One result row of a probe run: what was checked, how it came out, and why we say so."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Result = Literal["pass", "fail", "skip", "info"]
Level = Literal["MUST", "SHOULD"]


@dataclass(frozen=True, slots=True)
class Finding:
    """``level`` says how much a ``fail`` weighs: a failed MUST makes the run exit non-zero.

    ``details`` only go into the JSON report (per-message tables, timings)."""

    check: str
    result: Result
    level: Level
    evidence: str
    reference: str
    details: Mapping[str, object] = field(default_factory=dict)

    @property
    def must_failed(self) -> bool:
        return self.result == "fail" and self.level == "MUST"

    def to_dict(self) -> dict[str, object]:
        return {"check": self.check, "result": self.result, "level": self.level,
                "evidence": self.evidence, "reference": self.reference,
                "details": dict(self.details)}


def judge(ok: bool, check: str, level: Level, evidence: str, reference: str,
          **details: object) -> Finding:
    return Finding(check, "pass" if ok else "fail", level, evidence, reference, details)


def skip(check: str, level: Level, why: str, reference: str) -> Finding:
    return Finding(check, "skip", level, why, reference)


def info(check: str, evidence: str, reference: str, **details: object) -> Finding:
    return Finding(check, "info", "SHOULD", evidence, reference, details)
