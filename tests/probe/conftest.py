"""The interop fixtures (child-process reaper) for the probe's tests."""

from tests.interop.conftest import procs

__all__ = ["procs"]
