"""The chaos harness (REL-07, TST-06): load, a seeded nemesis, a history, a checker.

`run.run_chaos` drives one run; `python -m ci_harness.chaos` is the long run. Modules:
`history` (the JSONL record), `load` (clients), `final` (the last read), `nemesis`
(schedule and faults), `checker` (REL-01..05 from the history alone), `report` (the
table).
"""
