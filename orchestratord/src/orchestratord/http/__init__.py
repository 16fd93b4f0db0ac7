"""The public HTTP/SSE surface of orchestratord (Starlette)."""
