"""`EventLog`: one task's SSE events, with replay and fan-out (API-04, REL-04).

Every event is encoded once, as the exact bytes of its SSE frame
(`id: N\nevent: NAME\ndata: JSON\n\n`), and kept in a bounded replay buffer. Subscribers
get the frames after the id they already have; live frames are appended to each
subscriber's pending list and the subscriber is woken, so a writer that falls behind
sends what piled up in one write while the first frame is never held back. After the
terminal event (`end` or `error`) the log is closed: nothing can follow it.

Tokens that arrived together (one engine read) are appended together (`append_tokens`):
each still gets its own frame and id, but the subscribers are woken once. Nothing waits
for more tokens: a lone token is published at once.

A subscriber may instead ask for decoded events, `(name, data)` pairs: the OpenAI facade
reads the same log that way and frames the events in its own wire format.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable

__all__ = ["TERMINAL_EVENTS", "TOKEN_RUN", "EventLog", "Subscriber", "text_literal"]

TERMINAL_EVENTS = frozenset({"end", "error"})
# The name of a run of `token` events as `EventLog.take_unjournaled` hands them to the
# journal: `(first_id, TOKEN_RUN, data lines joined by "\n")`, ids counting up from
# `first_id` (a token event's data is one line of JSON; `journal.records.expand` takes a
# run apart). One string per engine read instead of a tuple per token: what the journal
# encodes and writes per token is a copy of its data.
TOKEN_RUN = ""
HEARTBEAT = b": keep-alive\n\n"


_TOKEN_PREFIX = len('{"t":')


def token_text_json(data: str) -> str:
    """The JSON string literal of a `token` event's text, without decoding it.

    `append_token` writes `{"t":<JSON string>,"i":<int>}`; a re-framer (the OpenAI facade)
    can splice the literal into its own JSON and skip a decode/encode per token.
    """
    return data[_TOKEN_PREFIX : data.rindex(',"i":')]


def text_literal(text: str) -> str:
    """`json.dumps(text, ensure_ascii=False)`, without the encoder for plain text.

    Printable text without `"` or `\\` needs no escape (every character json escapes
    is a quote, a backslash or unprintable), so quoting it is the whole encoding."""
    if '"' in text or "\\" in text or not text.isprintable():
        return json.dumps(text, ensure_ascii=False)
    return f'"{text}"'


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Subscriber:
    """SSE frames for one stream writer. Not a queue: what piled up is taken at once."""

    __slots__ = ("_log", "_waiter", "closed", "pending")

    def __init__(self, log: EventLog, backlog: list[bytes]) -> None:
        self._log = log
        self.pending = backlog
        self.closed = log.closed
        self._waiter: asyncio.Future[None] | None = None

    def notify(self) -> None:
        _wake(self._waiter)

    async def next_chunk(self, heartbeat_s: float) -> bytes | None:
        """Frames that arrived since the last call (a heart-beat after `heartbeat_s` of
        silence), or None once the log is closed and everything was sent."""
        if not self.pending and not self.closed:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(heartbeat_s, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self.pending:
            frames, self.pending = self.pending, []
            return frames[0] if len(frames) == 1 else b"".join(frames)
        return None if self.closed else HEARTBEAT

    def detach(self) -> None:
        self._log.unsubscribe(self)


class DecodedSubscriber:
    """Like `Subscriber`, but receives `(name, data)` pairs instead of SSE frames."""

    __slots__ = ("_log", "_waiter", "closed", "pending")

    def __init__(self, log: EventLog, backlog: list[tuple[str, str]]) -> None:
        self._log = log
        self.pending = backlog
        self.closed = log.closed
        self._waiter: asyncio.Future[None] | None = None

    def notify(self) -> None:
        _wake(self._waiter)

    async def next_events(self) -> list[tuple[str, str]] | None:
        """Events since the last call; None once the log is closed and all were taken."""
        if not self.pending and not self.closed:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self.pending:
            events, self.pending = self.pending, []
            return events
        return None

    def detach(self) -> None:
        self._log.unsubscribe(self)


def _frame(event_id: int, name: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {data}\n\n".encode()


class EventLog:
    __slots__ = (
        "_decoded",
        "_frames",
        "_next_id",
        "_subscribers",
        "closed",
        "held",
        "unjournaled",
    )

    def __init__(self, replay_capacity: int, *, journaled: bool = False) -> None:
        # (id, name, data); a replaying subscriber gets the frames built again.
        self._frames: deque[tuple[int, str, str]] = deque(maxlen=replay_capacity)
        self._next_id = 0
        self._subscribers: list[Subscriber] = []
        self._decoded: list[DecodedSubscriber] = []
        self.closed = False
        # The job ended; its terminal event waits for the journal: nothing else may come.
        self.held = False
        # Events the journal has not taken yet (`take_unjournaled`); None: not journaled.
        self.unjournaled: list[tuple[int, str, str]] | None = [] if journaled else None

    @classmethod
    def restored(
        cls,
        replay_capacity: int,
        events: Iterable[tuple[int, str, str]],
        next_id: int,
        *,
        journaled: bool = False,
    ) -> EventLog:
        """A log rebuilt from journaled events; new events are numbered from `next_id`
        (past any id a client may have seen before the journal caught up)."""
        log = cls(replay_capacity, journaled=journaled)
        for event_id, name, data in events:
            log._frames.append((event_id, name, data))
            if name in TERMINAL_EVENTS:
                log.closed = True
        log._next_id = next_id
        return log

    def take_unjournaled(self) -> list[tuple[int, str, str]]:
        """The events appended since the last call (for the journal's next batch); tokens
        that arrived together as one run (`TOKEN_RUN`)."""
        taken = self.unjournaled
        if not taken:
            return []
        self.unjournaled = []
        return taken

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def subscriber_count(self) -> int:
        return len(self._subscribers) + len(self._decoded)

    @property
    def next_id(self) -> int:
        return self._next_id

    def append(self, name: str, data: str, *, journal: bool = True) -> bool:
        """Add one event; False (and nothing added) when the log is already closed.
        `journal=False`: the journal already holds it (a held terminal event)."""
        if self.closed or self.held:
            return False
        event_id = self._next_id
        self._next_id += 1
        frame = _frame(event_id, name, data)
        self._frames.append((event_id, name, data))
        if self.unjournaled is not None and journal:
            self.unjournaled.append((event_id, name, data))
        if name in TERMINAL_EVENTS:
            self.closed = True
        for subscriber in self._subscribers:
            subscriber.pending.append(frame)
            subscriber.closed = self.closed
            subscriber.notify()
        for decoded in self._decoded:
            decoded.pending.append((name, data))
            decoded.closed = self.closed
            decoded.notify()
        return True

    def append_token(self, text: str, index: int) -> bool:
        """One `token` event, JSON written by hand."""
        return self.append("token", f'{{"t":{text_literal(text)},"i":{index}}}')

    def append_tokens(self, texts: Iterable[str], first_index: int) -> int:
        """The hot path: `token` events that arrived together, indexes counting from
        `first_index`; the subscribers are woken once. Returns how many were added (0
        when the log is already closed)."""
        if self.closed or self.held:
            return 0
        first_id = event_id = self._next_id
        index = first_index
        added: list[tuple[int, str, str]] = []
        for text in texts:
            added.append((event_id, "token", f'{{"t":{text_literal(text)},"i":{index}}}'))
            event_id += 1
            index += 1
        self._next_id = event_id
        self._frames.extend(added)
        if self.unjournaled is not None:
            self.unjournaled.append((first_id, TOKEN_RUN, "\n".join([e[2] for e in added])))
        if self._subscribers:  # the batch's frames as one chunk, encoded once
            chunk = "".join(
                [f"id: {i}\nevent: token\ndata: {data}\n\n" for i, _, data in added]
            ).encode()
            for subscriber in self._subscribers:
                subscriber.pending.append(chunk)
                subscriber.notify()
        if self._decoded:
            pairs = [("token", data) for _, _, data in added]
            for decoded in self._decoded:
                decoded.pending += pairs
                decoded.notify()
        return event_id - first_id

    def append_token_logprobs(self, text: str, index: int, logprobs: str) -> bool:
        """A `token` event with its `logprobs` (a JSON array, `logprobs.entries_json`).

        Written as `{"t":..,"i":..,"logprobs":..}`: the text literal and the index keep
        their places, so `token_text_json` reads these events too."""
        text_json = json.dumps(text, ensure_ascii=False)
        return self.append("token", f'{{"t":{text_json},"i":{index},"logprobs":{logprobs}}}')

    def subscribe(self, after_id: int | None) -> Subscriber:
        """Frames after `after_id` (all when None), then live ones.

        ValueError when `after_id` is older than the replay buffer (a gap would follow).
        """
        if after_id is None:
            backlog = [_frame(*entry) for entry in self._frames]
        else:
            oldest = self._frames[0][0] if self._frames else self._next_id
            if after_id + 1 < oldest:
                raise ValueError(f"event {after_id + 1} is no longer in the replay buffer")
            backlog = [_frame(*entry) for entry in self._frames if entry[0] > after_id]
        subscriber = Subscriber(self, backlog)
        self._subscribers.append(subscriber)
        return subscriber

    def subscribe_decoded(self) -> DecodedSubscriber:
        """All events so far as `(name, data)` pairs, then live ones."""
        subscriber = DecodedSubscriber(self, [(name, data) for _, name, data in self._frames])
        self._decoded.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber | DecodedSubscriber) -> None:
        if isinstance(subscriber, DecodedSubscriber):
            if subscriber in self._decoded:
                self._decoded.remove(subscriber)
        elif subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
