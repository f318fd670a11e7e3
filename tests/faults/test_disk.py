"""The CDR and SIEM files' disk fills up, then turns read-only (a small tmpfs mounted for the
test, as root; unmounted after).

What must hold: calls go on as if nothing happened; each sink reports the failure once and its
recovery once (not a line or a traceback per record); what could not be written is dropped and
counted, never queued up in memory; writing resumes by itself when the disk has room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.faults.harness import DOMAIN, FaultRig, start_rig, stop_rig

pytestmark = pytest.mark.slow


def _mount_tmpfs(path: Path) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.strip()}")


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two small tmpfs: CDRs on one, the SIEM file on the other (the SIEM sink keeps its file
    open, and a file system with a writer cannot be remounted read-only)."""
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    cdr, siem = tmp_path / "cdr-disk", tmp_path / "siem-disk"
    try:
        _mount_tmpfs(cdr)
        _mount_tmpfs(siem)
        yield cdr, siem
    finally:
        for path in (cdr, siem):
            if path.is_mount():
                subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
async def rig(tmp_path: Path, disks: tuple[Path, Path]) -> AsyncIterator[FaultRig]:
    for disk in disks:  # full from the start: tmpfs allocates by page, so a file that already
        fill(disk)      # holds a line could take appends into its last page on a "full" disk
    r = await start_rig(tmp_path, cdr_path=disks[0] / "cdr.jsonl",
                        logging={"security_file": str(disks[1] / "security.jsonl")},
                        firewall={"log_interval": 0.2})
    try:
        yield r
        r.assert_no_traceback()
    finally:
        await stop_rig(r)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


async def security_events(rig: FaultRig, count: int) -> None:
    """``count`` firewall events: OPTIONS from an address no trunk admits, one per log interval."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.9", 0))
        for i in range(count):
            s.sendto((f"OPTIONS sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9;branch="
                      f"z9hG4bK-disk{i}\r\nFrom: <sip:x@y>;tag={i}\r\nTo: <sip:{DOMAIN}>\r\n"
                      f"Call-ID: disk-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                      ).encode(), rig.udp)
            await asyncio.sleep(0.3)


async def one_call(rig: FaultRig, user: str) -> None:
    call, incoming, _, _ = await rig.call(rig.carrier, user)
    assert (await call.bye(5)).status == 200
    await incoming.wait_state("terminated", 5)


async def wait_for(check, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    assert check()


async def test_full_then_read_only_disk_calls_go_on_errors_reported_once(
        rig: FaultRig, disks: tuple[Path, Path]) -> None:
    gw = rig.gw
    for user in ("101", "102", "103"):  # the disk is full
        await one_call(rig, user)
    await security_events(rig, 3)
    await wait_for(lambda: gw.metric("srtpgw_cdr_write_errors_total") == 3)
    await wait_for(lambda: gw.metric("srtpgw_siem_write_errors_total") >= 1)
    assert len(gw.lines("cdr.write_failed")) == 1
    assert len(gw.lines("siem.write_failed")) == 1
    assert rig.cdrs() == []

    for disk in disks:
        (disk / "filler").unlink()  # room again: both sinks resume on their own, and say so once
    await one_call(rig, "104")
    await security_events(rig, 2)
    cdrs = await rig.wait_cdrs(1)
    assert [c["callee"] for c in cdrs] == ["104"]  # the lost ones are not replayed late
    await wait_for(lambda: len(gw.lines("siem.write_recovered")) == 1)
    assert len(gw.lines("cdr.write_recovered")) == 1
    assert "lost=3" in gw.lines("cdr.write_recovered")[0]

    subprocess.run(["mount", "-o", "remount,ro", str(disks[0])], check=True)
    try:
        await one_call(rig, "105")
        await wait_for(lambda: gw.metric("srtpgw_cdr_write_errors_total") == 4)
        assert len(gw.lines("cdr.write_failed")) == 2  # a new run of failures
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disks[0])], check=True)
    await one_call(rig, "106")
    assert [c["callee"] for c in await rig.wait_cdrs(2)] == ["104", "106"]
    assert gw.metric("srtpgw_calls_total", trunk="pbx", outcome="answered") == 6
