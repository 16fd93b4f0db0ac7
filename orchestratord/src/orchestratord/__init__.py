"""orchestratord: the orchestrator daemon (HTTP/SSE API, admission, placement, dispatch,
pool registry, control link). Run it with `orchestratord` or `python -m orchestratord`.
See README.md in this folder for the flow of a job.
"""
