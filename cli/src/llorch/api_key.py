"""The API key the CLI sends (SEC-01, SEC-05): `$LLORCH_API_KEY`, as
`Authorization: Bearer <key>`, on every call to the orchestrator.

Read from the environment, never from a flag, so the key is not in the process list or
the shell history. Control commands that change the fleet (`deploy apply|rm`, `pools
drain|reload`, `hosts cordon|uncordon`) need a key with role `admin`; jobs and reads a
`client` key. Without the variable nothing is sent (an orchestrator with no keys, on
loopback, needs none).
"""

from __future__ import annotations

import os

__all__ = ["ENV", "auth_headers"]

ENV = "LLORCH_API_KEY"


def auth_headers() -> dict[str, str]:
    key = os.environ.get(ENV, "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}
