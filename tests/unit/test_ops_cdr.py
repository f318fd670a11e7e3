"""CDR lines, rotation and the call correlation id."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.config import CdrSection
from gateway.ops.cdr import CallRecord, CdrWriter, LegRecord


def record(ref: str = "0123456789abcdef", **kw: object) -> CallRecord:
    rec = CallRecord(call=ref, from_trunk="pbx", to_trunk="carrier", start=1_800_000_000.25,
                     answer=1_800_000_001.5, end=1_800_000_061.5, end_cause="caller_bye",
                     final_status=200, caller="100", callee="4930123",
                     legs=[LegRecord("pbx", "legacy", "udp", "rtp", "PCMU", None, 3000, 3000,
                                     516000, 516000),
                           LegRecord("carrier", "secure", "tls", "srtp", "PCMU",
                                     "AEAD_AES_256_GCM", 3000, 3000, 564000, 564000, 2, 1)])
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_record_is_one_json_line_with_times_and_legs() -> None:
    doc = json.loads(record().to_json())
    assert doc["call"] == "0123456789abcdef"
    assert doc["start"] == "2027-01-15T08:00:00.250Z"
    assert doc["answer"] == "2027-01-15T08:00:01.500Z"
    assert doc["duration"] == 60.0
    assert doc["legs"][1]["suite"] == "AEAD_AES_256_GCM"
    assert doc["legs"][1]["auth_failures"] == 2 and doc["legs"][1]["replays"] == 1
    assert "\n" not in record().to_json()


def test_unanswered_call_has_zero_duration() -> None:
    doc = json.loads(record(answer=None, end_cause="rejected", final_status=486).to_json())
    assert doc["answer"] is None and doc["duration"] == 0.0


def test_record_never_carries_sdes_keys() -> None:
    leaked = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32"
    line = record(caller=leaked).to_json()
    assert "WVNfX19zZW1jdGwg" not in line
    assert "<redacted>" in line


def test_writer_appends_lines(tmp_path: Path) -> None:
    path = tmp_path / "cdr.jsonl"
    w = CdrWriter(CdrSection(path=path, max_bytes=1 << 20, backups=2))
    for i in range(3):
        w.write(record(ref=f"{i:016x}"))
    lines = path.read_text().splitlines()
    assert [json.loads(x)["call"] for x in lines] == [f"{i:016x}" for i in range(3)]
    assert w.written == 3 and w.errors == 0
    assert path.stat().st_mode & 0o077 in (0o040, 0o000)


def test_rotation_keeps_backups_and_bounds_size(tmp_path: Path) -> None:
    path = tmp_path / "cdr.jsonl"
    size = len(record().to_json()) + 1
    w = CdrWriter(CdrSection(path=path, max_bytes=size * 2, backups=2))
    for i in range(7):
        w.write(record(ref=f"{i:016x}"))
    refs = {p.name: [json.loads(x)["call"][-1] for x in p.read_text().splitlines()]
            for p in sorted(tmp_path.iterdir())}
    assert refs == {"cdr.jsonl": ["6"], "cdr.jsonl.1": ["4", "5"], "cdr.jsonl.2": ["2", "3"]}
    assert all(p.stat().st_size <= size * 2 for p in tmp_path.iterdir())


def test_rotation_without_backups_truncates(tmp_path: Path) -> None:
    path = tmp_path / "cdr.jsonl"
    size = len(record().to_json()) + 1
    w = CdrWriter(CdrSection(path=path, max_bytes=size, backups=0))
    for i in range(3):
        w.write(record(ref=f"{i:016x}"))
    assert [p.name for p in tmp_path.iterdir()] == ["cdr.jsonl"]
    assert json.loads(path.read_text())["call"].endswith("2")


def test_write_failure_is_counted_not_raised(tmp_path: Path) -> None:
    w = CdrWriter(CdrSection(path=tmp_path / "no" / "such" / "dir.jsonl"))
    w.write(record())
    assert w.errors == 1 and w.written == 0


def test_no_path_writes_nothing(tmp_path: Path) -> None:
    w = CdrWriter(CdrSection(path=None))
    w.write(record())
    assert w.written == 0 and list(tmp_path.iterdir()) == []
