"""iggy-fast: a persistent message streaming server speaking Apache Iggy's binary protocol.

The hot paths are compiled (Cython): `iggy_fast._wire` (codec, checksums) and
`iggy_fast._log` (segment storage). A compiled install is required.
"""

__version__ = "0.1.0"

try:
    from iggy_fast import _log, _wire  # noqa: F401
except ImportError as e:  # pragma: no cover - shown to someone running from a bare checkout
    raise ImportError(
        "iggy_fast's compiled extensions are missing: install the package with "
        "`pip install .` (or `pip install -e .`) so that _wire and _log are built"
    ) from e
