"""`JournalLog`: the journal's log, the one write on the event loop, and where a job's
events are read back from.

A commit is one framed record (a batch) copied to the end of the current log file, which
is mapped into memory (`MAP_SHARED`): no system call per record. The record is in the
page cache once the copy returns, so it survives a crash of the process (SIGKILL
included); it survives power loss once synced (`msync` of its pages, every record with
`sync=True`, the `journal_sync: full` setting). A file's blocks are reserved before they are
mapped (`posix_fallocate`: 4 MiB when it is made, doubled as it fills, up to `max_bytes`;
a larger record gets a file of its size): a full disk is an error there, never a fault when
a mapped page is first written. (A `write` call per record, extending the file each time,
cost the gateway about 1 µs per token event at 100 events a job.)

The store indexes the records in bulk, off the loop, and points at them for events; a
file is removed once no job the store keeps was accepted in it or before
(`remove_before`). Files are rotated when the next record does not fit; each start begins
a new file, so a record torn by a crash ends its file for good. A file is cut to its
records when it is closed; one a crash left keeps its zeroed tail, which reads as the end.

A record is `length (4 bytes LE) | crc32 (4 bytes LE) | payload`, the payload the batch
in `marshal` form (plain tuples, strings and numbers: C speed both ways; it reads only
what this module wrote, in the daemon's own state directory). A torn last record (a crash or
power loss in the middle of a write) was never acknowledged: reading stops there.
"""

from __future__ import annotations

import logging
import marshal
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from orchestratord.journal.records import (
    Accepted,
    IdempotencyRecord,
    Located,
    StateChange,
    WriteBatch,
    expand,
)

__all__ = ["JournalLog", "LogCorrupt", "decode", "encode"]

log = logging.getLogger("orchestratord.journal")

_HEADER = struct.Struct("<II")
_SUFFIX = ".wal"
_MARSHAL_VERSION = 4
MAX_BYTES = 64 * 1024 * 1024
_FIRST_BYTES = 4 * 1024 * 1024  # reserved when a file is made, doubled as it fills


class LogCorrupt(Exception):
    """A record the store points at cannot be read back (the file was damaged)."""


def encode(batch: WriteBatch) -> bytes:
    payload = marshal.dumps(
        (
            [
                (
                    a.task_id,
                    a.wire,
                    a.route,
                    a.api_key,
                    a.correlation_id,
                    a.detached,
                    a.created_ms,
                    None
                    if (i := a.idempotency) is None
                    else (i.scope, i.digest, i.task_id, i.created_ms),
                )
                for a in batch.accepted
            ],
            batch.events,
            [
                (
                    c.task_id,
                    c.state,
                    c.attempts,
                    c.pool_id,
                    c.started_ms,
                    c.finished_ms,
                    c.error,
                    c.end_json,
                    c.tokens_in,
                    c.tokens_out,
                    c.finish_reason,
                )
                for c in batch.changes
            ],
        ),
        _MARSHAL_VERSION,
    )
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes, *, runs: bool = False) -> WriteBatch:
    """The batch of a record; `runs=True` leaves runs of tokens whole (as the store
    indexes them: by their first and last ids) instead of one event per token."""
    accepted, events, changes = marshal.loads(payload)
    return WriteBatch(
        [_accepted(*fields) for fields in accepted],
        events if runs else [(task_id, expand(batch)) for task_id, batch in events],
        [StateChange(*fields) for fields in changes],
    )


def _accepted(
    task_id: str,
    wire: str,
    route: str,
    api_key: str | None,
    correlation_id: str,
    detached: bool,
    created_ms: int,
    idempotency: tuple[str, str, str, int] | None,
) -> Accepted:
    key = None if idempotency is None else IdempotencyRecord(*idempotency)
    return Accepted(task_id, wire, route, api_key, correlation_id, detached, created_ms, key)


class JournalLog:
    def __init__(self, directory: Path, *, sync: bool = False, max_bytes: int = MAX_BYTES) -> None:
        self._dir = directory
        self._sync = sync
        self._max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        numbers = self._numbers()
        self.file = (numbers[-1] if numbers else 0) + 1  # the file appends go to
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._size = 0  # the current file's reserved size
        self.offset = 0  # the end of the current file's records

    def _numbers(self) -> list[int]:
        return sorted(int(p.stem) for p in self._dir.glob(f"*{_SUFFIX}") if p.stem.isdigit())

    def _path(self, number: int) -> Path:
        return self._dir / f"{number:012d}{_SUFFIX}"

    @property
    def syncs(self) -> bool:
        """Whether every record is synced to the disk (`journal_sync: full`)."""
        return self._sync

    @property
    def position(self) -> tuple[int, int]:
        """Where the next record goes: everything before it is written."""
        return self.file, self.offset

    # -- writes (on the event loop) ----------------------------------------------------

    def append(self, batch: WriteBatch) -> Located:
        """One record, copied into the mapped file (OSError when no file can be made for
        it, e.g. the disk is full: nothing is written)."""
        record = encode(batch)
        size = len(record)
        end = self.offset + size
        if self._map is not None and end > self._size:
            if end <= self._max_bytes:
                self._grow(end)
            else:
                self._rotate()
        if self._map is None:
            self._open(max(min(self._max_bytes, _FIRST_BYTES), size))
        assert self._map is not None
        start = self.offset
        self._map[start : start + size] = record
        if self._sync:
            aligned = start - start % mmap.PAGESIZE
            self._map.flush(aligned, start + size - aligned)
        located = Located(batch, self.file, start)
        self.offset = start + size
        return located

    def _open(self, size: int) -> None:
        fd = os.open(self._path(self.file), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            self._path(self.file).unlink(missing_ok=True)
            raise
        self._fd, self._size, self.offset = fd, size, 0

    def _grow(self, end: int) -> None:
        """Reserve and map more of the current file: twice as much, up to `max_bytes`."""
        assert self._map is not None and self._fd is not None
        size = min(self._max_bytes, max(end, 2 * self._size))
        os.posix_fallocate(self._fd, 0, size)
        self._map.resize(size)
        self._size = size

    def _rotate(self) -> None:
        self.close()
        self.file += 1
        self.offset = 0

    def close(self) -> None:
        """Unmap the current file and cut it to its records."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, self.offset)
            finally:
                os.close(self._fd)
                self._fd = None

    # -- off the loop ------------------------------------------------------------------

    def read(self, number: int, offset: int) -> WriteBatch:
        """The batch of the record at `offset` of file `number`."""
        try:
            with open(self._path(number), "rb") as file:
                file.seek(offset)
                header = file.read(_HEADER.size)
                length, crc = _HEADER.unpack(header)
                payload = file.read(length)
        except (OSError, struct.error) as exc:
            raise LogCorrupt(f"journal log {number} at {offset}: {exc}") from exc
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise LogCorrupt(f"journal log {number} at {offset}: damaged record")
        return decode(payload)

    def after(self, position: tuple[int, int]) -> Iterator[Located]:
        """The records after `position` (a file and an offset), oldest first: what a
        store that took the log up to `position` lacks."""
        start_file, start_offset = position
        for number in self._numbers():
            if number < start_file or number >= self.file:
                continue
            data = self._path(number).read_bytes()
            offset = start_offset if number == start_file else 0
            while offset + _HEADER.size <= len(data):
                length, crc = _HEADER.unpack_from(data, offset)
                if length == 0:  # the zeroed tail of a file a crash left open
                    break
                start = offset + _HEADER.size
                payload = data[start : start + length]
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                yield Located(decode(payload, runs=True), number, offset)
                offset = start + length
            if data[offset:].strip(b"\0"):
                log.warning(
                    "journal log %s ends with %d bytes of a record never completed (a crash "
                    "during its write); they are ignored",
                    self._path(number).name,
                    len(data) - offset,
                )

    def between(self, start: tuple[int, int], end: tuple[int, int]) -> Iterator[Located]:
        """The records from `start` (a file and an offset) up to `end` (a `position`
        taken earlier), oldest first, read back from the files (off the loop: the loop
        keeps appending after `end` meanwhile; what it wrote through the mapping is in the
        page cache, which reads see)."""
        start_file, start_offset = start
        end_file, end_offset = end
        for number in range(start_file, end_file + 1):
            first = start_offset if number == start_file else 0
            try:
                with open(self._path(number), "rb") as file:
                    file.seek(first)
                    if number == end_file:
                        data = file.read(max(0, end_offset - first))
                    else:  # closed since: cut to its records
                        data = file.read()
            except FileNotFoundError:
                continue  # no record was ever written to it (a start made none)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, crc = _HEADER.unpack_from(data, offset)
                if length == 0:
                    break
                body = offset + _HEADER.size
                payload = data[body : body + length]
                if len(payload) < length or zlib.crc32(payload) != crc:
                    raise LogCorrupt(f"journal log {number} at {first + offset}: damaged record")
                yield Located(decode(payload, runs=True), number, first + offset)
                offset = body + length

    def remove_before(self, number: int) -> int:
        """Remove the files before `number` (never the current one); how many."""
        removed = 0
        for old in self._numbers():
            if old < min(number, self.file):
                self._path(old).unlink(missing_ok=True)
                removed += 1
        return removed
