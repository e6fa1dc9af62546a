"""Build script: compiles the Cython hot paths (_wire, _log, _json, _websocket).

A compiled install is required, as with asyncpg: there is no pure-Python fallback.
Set IGGY_FAST_DEBUG=1 for a debug build (-O0 -g, line tracing, annotated HTML).
"""

import os
import sys

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - build isolation installs Cython
    sys.exit("iggy-fast needs Cython >= 3 to build its extensions: pip install Cython")

DEBUG = os.environ.get("IGGY_FAST_DEBUG") == "1"

if DEBUG:
    cflags = ["-O0", "-g", "-Wall"]
    macros = [("CYTHON_TRACE_NOGIL", "1"), ("IGGY_FAST_DEBUG", "1")]
    directives = {"linetrace": True, "boundscheck": True, "wraparound": False}
else:
    # -O3, not -O2: gcc 12 vectorises the XXH3 stripe loop (8 x u64 lanes) only at -O3,
    # which more than doubles checksum speed on 1 MB batches (BENCHMARKS.md, "Checksums").
    cflags = ["-O3", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]
    macros = []
    directives = {"boundscheck": False, "wraparound": False}

directives.update(language_level=3, cdivision=True, embedsignature=True)

extensions = [
    Extension(
        f"iggy_fast.{name}",
        [f"iggy_fast/{name}.pyx"],
        include_dirs=["iggy_fast"],
        extra_compile_args=cflags,
        define_macros=macros,
    )
    for name in ("_wire", "_log", "_json", "_websocket")
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=DEBUG))
