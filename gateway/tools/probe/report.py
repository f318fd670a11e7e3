"""The probe's two outputs: a table for people and JSON for pipelines (docs/probe.md)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence

from gateway.tools.probe.findings import Finding

EXIT_OK = 0
EXIT_MUST_FAILED = 1
_WIDTHS = (34, 11, 54, 32)


def result_label(f: Finding) -> str:
    return f"FAIL {f.level}" if f.result == "fail" else f.result


def exit_code(findings: Sequence[Finding]) -> int:
    return EXIT_MUST_FAILED if any(f.must_failed for f in findings) else EXIT_OK


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    out = {"pass": 0, "fail_must": 0, "fail_should": 0, "skip": 0, "info": 0}
    for f in findings:
        key = f"fail_{f.level.lower()}" if f.result == "fail" else f.result
        out[key] += 1
    return out


def render_table(findings: Sequence[Finding], meta: Mapping[str, object]) -> str:
    """Fixed-width columns, long evidence wrapped inside its column."""
    head = ("check", "result", "evidence", "reference")
    rule = "  ".join("-" * w for w in _WIDTHS)
    lines = [f"srtpgw probe {meta.get('target')} (profile {meta.get('profile')})", "",
             _row(head), rule]
    for f in findings:
        lines.append(_row((f.check, result_label(f), f.evidence, f.reference)))
    s = summary(findings)
    lines += [rule, f"{s['pass']} pass, {s['fail_must']} MUST failed, {s['fail_should']} SHOULD "
                    f"failed, {s['skip']} skipped, {s['info']} info"
                    f" -> exit {exit_code(findings)}"]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(cells, _WIDTHS, strict=True)]
    height = max(len(w) for w in wrapped)
    out = []
    for i in range(height):
        parts = [(w[i] if i < len(w) else "").ljust(width)
                 for w, width in zip(wrapped, _WIDTHS, strict=True)]
        out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def render_json(findings: Sequence[Finding], meta: Mapping[str, object]) -> str:
    return json.dumps({**meta, "summary": summary(findings), "exit": exit_code(findings),
                       "findings": [f.to_dict() for f in findings]}, indent=2, default=str)
