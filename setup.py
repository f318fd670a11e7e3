"""Only for what pyproject.toml cannot say: the cffi-built native media loop (a C compiler is
required, see README)."""

from setuptools import setup

setup(cffi_modules=["gateway/media/fastpath_build.py:ffibuilder"])
