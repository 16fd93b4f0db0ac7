"""vLLM in the worker process (WRK-03). `plan` is pure and imports no vLLM; `backend`
imports vLLM and runs only on the python of the `vllm-inproc:package` engine venv."""

from __future__ import annotations
