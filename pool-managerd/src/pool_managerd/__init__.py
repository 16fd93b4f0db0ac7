"""pool-managerd: the host daemon. It verifies models, starts `llorch worker` replicas in
their own process groups, probes and warms them up, restarts them with back-off, and
reports inventory and pool state to the orchestrator over the control link.
See README.md in this folder for the lifecycle.
"""
