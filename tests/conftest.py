"""Shared test plumbing: where the RFC 4475 vectors live, and how missing peers are treated.

Under CI=true a test that needs a real peer or the shared vectors must run: a skip for a missing
tool becomes a failure, so CI cannot go green by not testing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gateway.ops.log import reset_security_events
from tests.support.logcheck import RecordCheck, check_watched

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"  # beside the checkout, read in place
RFC4475_DIR = SHARED / "rfc4475"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip on a developer machine, fail under CI, when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason, allow_module_level=True)  # also called at import time


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (apt-get install it, see .ci/run)")
    assert path is not None
    return path


def rfc4475_dir() -> Path:
    require(RFC4475_DIR.is_dir(), f"RFC 4475 vectors not found at {RFC4475_DIR}")
    return RFC4475_DIR


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Belt and braces: under CI an interop test must not end skipped, whatever skipped it."""
    report = yield
    if IN_CI and report.skipped and item.get_closest_marker("interop") is not None:
        report.outcome = "failed"
        report.longrepr = f"interop test skipped under CI=true: {report.longrepr}"
    return report


@pytest.fixture(autouse=True)
def _fresh_security_events() -> None:
    """Each test starts with the event rate limit of a fresh process (nothing written yet)."""
    reset_security_events(60.0)


@pytest.fixture(autouse=True)
def _structured_log_only():  # type: ignore[no-untyped-def]
    """Nothing a gateway under test writes may fall outside its structured log (issue 13
    item 2): see tests/support/logcheck.py."""
    check = RecordCheck()
    check.attach()
    try:
        yield
    finally:
        check.detach()
    problems = check.problems + check_watched()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
