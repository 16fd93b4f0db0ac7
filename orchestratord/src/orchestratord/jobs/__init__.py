"""The life of a task, one module per stage (ARCHITECTURE §3):

    intake ─► queue ─► dispatch (the one loop) ─► attempt (one engine stream) ─► ledger

`intake` admits or refuses; `dispatch` places waiting tasks and acts on what each
attempt returns (decisions in `admission.outcomes`, pure); `attempt` relays one engine
stream and returns its outcome; `ledger` is where every task ends, exactly once.
`orchestratord.core.Orchestrator` composes them.
"""
