"""iggy-fast: a persistent message streaming server speaking Apache Iggy's binary protocol.

The hot paths are compiled (Cython): `iggy_fast._wire` (codec, checksums) and
`iggy_fast._log` (segment storage). A compiled install is required.

The client SDK is importable from here: `IggyClient` (asyncio), `SyncIggyClient` (blocking,
same methods), and what their methods take (`Partitioning`, `PollingStrategy`, `Consumer`,
`SendMessage`, `ClientConfig`); they are imported on first use, so a server process does not
load the client.
"""

__version__ = "0.1.0"

try:
    from iggy_fast import _log, _wire  # noqa: F401
except ImportError as e:  # pragma: no cover - shown to someone running from a bare checkout
    raise ImportError(
        "iggy_fast's compiled extensions are missing: install the package with "
        "`pip install .` (or `pip install -e .`) so that _wire and _log are built"
    ) from e


_CLIENT_NAMES = {
    "IggyClient": "iggy_fast.client.aio",
    "SyncIggyClient": "iggy_fast.client.blocking",
    "ClientConfig": "iggy_fast.client.connection_string",
    "Partitioning": "iggy_fast.client.types",
    "PollingStrategy": "iggy_fast.client.types",
    "Consumer": "iggy_fast.client.types",
    "SendMessage": "iggy_fast.client.types",
}


def __getattr__(name: str):
    module = _CLIENT_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'iggy_fast' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
