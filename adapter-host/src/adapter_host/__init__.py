"""Registry of adapters per pool replica, and the facade the dispatcher calls (ADP-06).

`AdapterHost.bind(pool_id, replica, kind, endpoint)` creates (or atomically replaces)
the adapter for one replica; `submit`, `cancel`, `health`, `props`, `tokenize`,
`detokenize` and `embed` go through it. A rebind to a new endpoint swaps the adapter at
once for new work while jobs already streaming keep the adapter they started with,
which is closed when the last of them ends.
"""

from __future__ import annotations

from adapter_host.host import AdapterHost, ReplicaKey, ReplicaNotBound

__all__ = ["AdapterHost", "ReplicaKey", "ReplicaNotBound"]
