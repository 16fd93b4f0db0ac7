"""The job journal (REL-01..05): `log` (the write-ahead log: the one write on the event
loop), `store` (the SQLite store behind the `JournalStore` interface, fed from the log in
bulk), `writer` (`Journal`: group commits off the token path), `recovery` (what a
restart does with each unfinished job, and reading ended jobs back)."""

from orchestratord.journal.log import JournalLog
from orchestratord.journal.store import JournalStore, SqliteJournal
from orchestratord.journal.writer import EVENT_ID_GAP, Journal, JournalUnavailable

__all__ = [
    "EVENT_ID_GAP",
    "Journal",
    "JournalLog",
    "JournalStore",
    "JournalUnavailable",
    "SqliteJournal",
]
