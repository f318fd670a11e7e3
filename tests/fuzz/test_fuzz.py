"""Fuzzing in the suite: every regression input replays clean, and each target survives a short
coverage-guided run under atheris. The million-input runs are ``benchmarks/fuzz.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RFC4475_DIR, require
from tests.fuzz.runner import CORPUS, run_target
from tests.fuzz.targets import NAMES, PythonMediaEngine, build, media_target

SHORT_RUNS = 3000


@pytest.fixture(scope="module", params=NAMES)
def target(request: pytest.FixtureRequest):
    t = build(request.param)
    yield t
    t.close()


def test_every_corpus_directory_names_a_target() -> None:
    assert {p.name for p in CORPUS.iterdir() if p.is_dir()} <= set(NAMES)


def test_regression_inputs_and_seeds_replay_clean(target) -> None:
    inputs = [p.read_bytes() for p in sorted((CORPUS / target.name).glob("*"))]
    for data in inputs + target.seeds:
        target.run(data)


def test_sip_target_reads_rfc4475_in_place() -> None:
    require(RFC4475_DIR.is_dir(), f"RFC 4475 vectors not found at {RFC4475_DIR}")
    sip = build("sip")
    assert sip.seed_dirs == [RFC4475_DIR]
    for path in sorted(RFC4475_DIR.glob("*.dat")):
        sip.run(path.read_bytes())


@pytest.mark.slow
def test_short_atheris_run(target, tmp_path: Path) -> None:
    result = run_target(target, SHORT_RUNS, tmp_path, slow_ms=10_000)
    assert result.crashes == 0 and result.returncode == 0, result.tail
    assert result.inputs >= SHORT_RUNS
    assert result.coverage > 0  # the gateway's modules were instrumented


class _OneBitOff(PythonMediaEngine):
    """An engine that differs from the reference in one output bit (stands in for a native
    path that got something wrong)."""

    name = "one-bit-off"

    def feed(self, packet: bytes, rtcp_port: bool = False) -> tuple[bytes | None, str]:
        out, why = super().feed(packet, rtcp_port)
        return (None if out is None else out[:-1] + bytes([out[-1] ^ 1])), why


def test_media_engines_are_compared_input_by_input() -> None:
    rtp = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0xAB, 0xCD]) + b"\xd5" * 160
    agree = media_target([PythonMediaEngine, PythonMediaEngine])
    disagree = media_target([PythonMediaEngine, _OneBitOff])
    try:
        agree.run(b"\x00" + rtp)  # plain to plain: forwarded as is by both
        with pytest.raises(AssertionError):
            disagree.run(b"\x00" + rtp)
    finally:
        agree.close()
        disagree.close()
