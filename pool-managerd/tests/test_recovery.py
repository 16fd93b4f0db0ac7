"""Engines left by a SIGKILLed pool manager (issue 11): the pure decision, the /proc
facts it is fed, and the driver over real process groups."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pool_managerd.process import boot_id, process_facts, scan_processes
from pool_managerd.records import (
    StateLock,
    StateLocked,
    load_records,
    recover_engines,
    remove_record,
    write_record,
)
from pool_managerd.recovery import EngineRecord, Forget, ProcessFacts, StopGroup, plan_recovery

BOOT = "boot-1"
RECORD = EngineRecord(
    name="p-r0",
    pool_id="p",
    replica=0,
    engine="llamacpp-inproc",
    pid=100,
    start_ticks=5000,
    boot_id=BOOT,
    cmdline=("python", "-m", "worker_adapters.worker", "--port-file", "/s/run/p-r0.port"),
)
LEADER = ProcessFacts(100, pgid=100, sid=100, start_ticks=5000, cmdline=RECORD.cmdline)
CHILD = ProcessFacts(101, pgid=100, sid=100, start_ticks=5010, cmdline=("helper",))
STRANGER = ProcessFacts(7, pgid=7, sid=7, start_ticks=10, cmdline=("init",))


def decide(*processes: ProcessFacts, boot: str = BOOT) -> StopGroup | Forget:
    (action,) = plan_recovery([RECORD], {p.pid: p for p in processes}, boot)
    return action


def test_a_running_engine_of_a_previous_manager_is_stopped_with_its_whole_group() -> None:
    action = decide(LEADER, CHILD, STRANGER)
    assert isinstance(action, StopGroup)
    assert action.pids == (100, 101)
    assert action.reason == "its engine still runs"


@pytest.mark.parametrize(
    ("leader", "reason"),
    [
        (
            ProcessFacts(100, 100, 100, 9999, RECORD.cmdline),
            "pid 100 now belongs to a process started at another time",
        ),
        (ProcessFacts(100, 100, 100, 5000, ("bash",)), "pid 100 now runs another command"),
        (
            ProcessFacts(100, 55, 55, 5000, RECORD.cmdline),
            "pid 100 is no longer the leader of its process group",
        ),
    ],
)
def test_a_reused_pid_is_never_signalled(leader: ProcessFacts, reason: str) -> None:
    assert decide(leader) == Forget(RECORD, reason)


def test_members_left_by_a_dead_leader_are_stopped() -> None:
    action = decide(CHILD, STRANGER)
    assert isinstance(action, StopGroup) and action.pids == (101,)
    assert "left processes in its group" in action.reason


def test_a_record_of_an_engine_that_is_gone_is_forgotten() -> None:
    assert decide(STRANGER) == Forget(RECORD, "its engine is gone")


def test_a_record_from_another_boot_is_forgotten_even_if_its_pid_runs_again() -> None:
    assert decide(LEADER, boot="boot-2") == Forget(RECORD, "recorded before the machine rebooted")


# -- over real processes ---------------------------------------------------------------


@pytest.fixture
def engine_group() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in engine: a process-group leader (own session) with a child, both
    ignoring nothing (SIGTERM ends them)."""
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    yield process
    if process.poll() is None:
        os.killpg(process.pid, 9)
    process.wait()


def wait_children(pid: int) -> list[int]:
    """The other members of group `pid`, once there are some (10 s at most)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        members = [p.pid for p in scan_processes().values() if p.pgid == pid and p.pid != pid]
        if members:
            return members
        time.sleep(0.02)
    raise AssertionError("the stand-in engine did not start its child")


def test_process_facts_read_the_group_session_and_command_line_of_a_live_process(
    engine_group: subprocess.Popen[bytes],
) -> None:
    wait_children(engine_group.pid)  # it runs its script: the exec is complete
    facts = process_facts(engine_group.pid)
    assert facts is not None
    assert facts.pgid == facts.sid == engine_group.pid
    assert facts.cmdline[0] == sys.executable and facts.cmdline[1] == "-c"
    assert facts.start_ticks > 0
    assert process_facts(engine_group.pid) == facts  # the start time is stable


def test_recovery_stops_a_recorded_engine_group_and_removes_its_record(
    tmp_path: Path, engine_group: subprocess.Popen[bytes]
) -> None:
    (child,) = wait_children(engine_group.pid)
    record = tmp_path / "p-r0.engine.json"
    assert write_record(record, pool_id="p", replica=0, engine="mock", pid=engine_group.pid)
    (loaded,) = load_records(tmp_path).values()
    assert loaded.pid == engine_group.pid and loaded.boot_id == boot_id()

    recovered = asyncio.run(recover_engines(tmp_path, grace_s=5.0))

    assert (recovered.stopped, recovered.forgotten, recovered.survivors) == (1, 0, ())
    assert engine_group.wait(timeout=5) != 0
    assert process_facts(child) is None
    assert not record.exists()


def test_recovery_leaves_a_process_alone_whose_pid_was_reused(
    tmp_path: Path, engine_group: subprocess.Popen[bytes]
) -> None:
    record = tmp_path / "p-r0.engine.json"
    assert write_record(record, pool_id="p", replica=0, engine="mock", pid=engine_group.pid)
    text = record.read_text()
    facts = process_facts(engine_group.pid)
    assert facts is not None
    record.write_text(text.replace(f'"start_ticks": {facts.start_ticks}', '"start_ticks": 1'))

    recovered = asyncio.run(recover_engines(tmp_path, grace_s=5.0))

    assert (recovered.stopped, recovered.forgotten) == (0, 1)
    assert engine_group.poll() is None  # not signalled
    assert not record.exists()


def test_a_record_is_removed_only_by_the_engine_it_names(tmp_path: Path) -> None:
    record = tmp_path / "p-r0.engine.json"
    assert write_record(record, pool_id="p", replica=0, engine="mock", pid=os.getpid())
    remove_record(record, pid=os.getpid() + 1)
    assert record.exists()
    remove_record(record, pid=os.getpid())
    assert not record.exists()


def test_a_second_pool_manager_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    first = StateLock(tmp_path / "run")
    try:
        with pytest.raises(
            StateLocked, match=f"in use by another pool-managerd .pid {os.getpid()}"
        ):
            StateLock(tmp_path / "run")
    finally:
        first.release()
    StateLock(tmp_path / "run").release()  # free again once released


def test_a_record_written_right_after_spawn_holds_the_executed_command_line(
    tmp_path: Path,
) -> None:
    """The spawner returns a moment before the kernel sets the new command line; the
    record waits for it (else the next start would forget a live engine as a reused
    pid). Spawned many times, each record must hold exactly what was executed."""
    for attempt in range(30):
        command = [sys.executable, "-c", "import time; time.sleep(30)", str(attempt)]
        process = subprocess.Popen(command, start_new_session=True)
        try:
            record = tmp_path / f"p-r{attempt}.engine.json"
            assert write_record(
                record,
                pool_id="p",
                replica=attempt,
                engine="mock",
                pid=process.pid,
                command=command,
            )
            (loaded,) = load_records(tmp_path).values()
            assert loaded.cmdline == tuple(command)
            record.unlink()
        finally:
            process.kill()
            process.wait()
