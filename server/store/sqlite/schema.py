"""The database schema, as numbered migrations applied at start-up.

``PRAGMA user_version`` records how many migrations a database has had. A
migration is appended, never edited, once it has shipped.
"""

from __future__ import annotations

import sqlite3

from server.store.migrations import refuse_newer

MIGRATIONS: list[list[str]] = [
    # 1: tasks, raw deliveries, quarantine, settings, leases
    [
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        # seq orders tasks newest first and is the pagination cursor; key is the
        # id lower-cased without dashes, so every spelling finds the row.
        """CREATE TABLE tasks (
            seq INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            task_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            status TEXT NOT NULL,
            state TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            completed_at REAL,
            next_check_at REAL,
            deliveries INTEGER NOT NULL DEFAULT 0,
            checks INTEGER NOT NULL DEFAULT 0,
            last_source TEXT,
            final_source TEXT
        )""",
        # Only unfinished tasks have a next check: a partial index stays small
        # however many finished tasks the table holds.
        "CREATE INDEX tasks_due ON tasks(next_check_at) WHERE next_check_at IS NOT NULL",
        "CREATE INDEX tasks_status ON tasks(status, seq)",
        "CREATE INDEX tasks_provider ON tasks(provider, status, seq)",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            task_key TEXT NOT NULL,
            provider TEXT NOT NULL,
            source TEXT NOT NULL,
            received_at REAL NOT NULL,
            sha256 TEXT NOT NULL,
            body BLOB NOT NULL,
            status TEXT,
            changed INTEGER NOT NULL DEFAULT 0
        )""",
        # A byte-identical repeat is the same (task, sha256): stored once.
        "CREATE UNIQUE INDEX deliveries_body ON deliveries(task_key, sha256)",
        "CREATE INDEX deliveries_task ON deliveries(task_key, id)",
        """CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            received_at REAL NOT NULL,
            reason TEXT NOT NULL,
            message TEXT NOT NULL,
            headers TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            body BLOB NOT NULL
        )""",
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ],
    # 2: archive copies of result files, one row per (task, result URL)
    [
        # status: pending (due at next_attempt_at), running (claimed by claimed_by
        # until claimed_until), done, failed (final). error/message keep the last
        # failure, also while a retry is pending.
        """CREATE TABLE archives (
            task_key TEXT NOT NULL,
            url TEXT NOT NULL,
            status TEXT NOT NULL,
            sha256 TEXT,
            bytes INTEGER,
            content_type TEXT,
            error TEXT,
            message TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            claimed_by TEXT,
            claimed_until REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (task_key, url)
        ) WITHOUT ROWID""",
        "CREATE INDEX archives_due ON archives(status, next_attempt_at)",
        "CREATE INDEX archives_sha256 ON archives(sha256) WHERE sha256 IS NOT NULL",
    ],
    # 3: the reconciler asks for due tasks one provider at a time; without this
    # index SQLite walks every task of the provider, finished ones included.
    [
        "CREATE INDEX tasks_due_provider ON tasks(provider, next_check_at)"
        " WHERE next_check_at IS NOT NULL",
    ],
    # 4: the outbox (events written in the transaction of their change, read in
    # commit order: one writer, so seq order is commit order; AUTOINCREMENT so a
    # seq is never reused after pruning and a cursor never skips), and lease terms.
    [
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            task_key TEXT NOT NULL,
            provider TEXT NOT NULL,
            created_at REAL NOT NULL,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX events_created ON events(created_at)",
        "CREATE INDEX events_task ON events(task_key, seq)",
        "ALTER TABLE leases ADD COLUMN term INTEGER NOT NULL DEFAULT 0",
    ],
    # 5: webhooks. An endpoint's position is the last event seq turned into its
    # messages; a message is one event for one endpoint (head: the earliest
    # pending one of its endpoint and task, the only one that may be claimed);
    # every attempt is a row.
    [
        """CREATE TABLE endpoints (
            id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            events TEXT,
            description TEXT,
            secret TEXT NOT NULL,
            previous_secret TEXT,
            previous_until REAL,
            created_at REAL NOT NULL,
            disabled_at REAL,
            disabled_reason TEXT,
            failing_since REAL,
            position INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            endpoint_id TEXT NOT NULL,
            event_seq INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            task_key TEXT NOT NULL,
            committed_at REAL NOT NULL,
            status TEXT NOT NULL,
            head INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            scheduled INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL,
            manual INTEGER NOT NULL DEFAULT 0,
            resume_at REAL,
            claimed_by TEXT,
            claim TEXT,
            claimed_until REAL,
            finished_at REAL,
            UNIQUE (event_id, endpoint_id)
        )""",
        "CREATE INDEX messages_task ON messages(endpoint_id, task_key, event_seq)"
        " WHERE status = 'pending'",
        "CREATE INDEX messages_due ON messages(endpoint_id, next_attempt_at)"
        " WHERE status = 'pending' AND head = 1",
        "CREATE INDEX messages_next ON messages(next_attempt_at)"
        " WHERE status = 'pending' AND head = 1",
        "CREATE INDEX messages_oldest ON messages(endpoint_id, event_seq) WHERE status = 'pending'",
        "CREATE INDEX messages_claimed ON messages(endpoint_id) WHERE claim IS NOT NULL",
        "CREATE INDEX messages_failed ON messages(endpoint_id, committed_at)"
        " WHERE status = 'failed'",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            endpoint_id TEXT NOT NULL,
            message_id INTEGER NOT NULL,
            event_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            attempted_at REAL NOT NULL,
            outcome TEXT NOT NULL,
            response_status INTEGER,
            duration_ms INTEGER,
            response TEXT,
            error TEXT
        )""",
        "CREATE INDEX attempts_endpoint ON attempts(endpoint_id, id)",
        "CREATE INDEX attempts_outcome ON attempts(endpoint_id, outcome, id)",
    ],
    # 6: no index of events by task: with random task keys it doubled the cost of
    # writing an event, and the feed and the deliveries read events by seq.
    [
        "DROP INDEX IF EXISTS events_task",
    ],
    # 7: webhook retention reads what finished, and which attempts were made, before a time.
    [
        "CREATE INDEX attempts_time ON attempts(attempted_at)",
        "CREATE INDEX messages_finished ON messages(finished_at) WHERE status != 'pending'",
    ],
    # 8: submits (POST /submit): each creation call and its answer; a record
    # holds its Idempotency-Key while key_held_until is set (one holder per key).
    [
        """CREATE TABLE submits (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            idempotency_key TEXT,
            fingerprint TEXT NOT NULL,
            answered INTEGER NOT NULL DEFAULT 0,
            status INTEGER NOT NULL,
            body TEXT NOT NULL,
            task_id TEXT,
            trace_id TEXT,
            created_at REAL NOT NULL,
            answered_at REAL,
            lapses_at REAL NOT NULL,
            key_held_until REAL
        )""",
        "CREATE UNIQUE INDEX submits_held_key ON submits(idempotency_key)"
        " WHERE key_held_until IS NOT NULL",
        "CREATE INDEX submits_created ON submits(created_at)",
    ],
    # 9: retention (``retention.py``). Tasks in the order they became final, to
    # prune their old bodies; a running total of quarantined body bytes, kept by
    # triggers whoever inserts or deletes, to hold QUARANTINE_MAX_BYTES.
    [
        "CREATE INDEX tasks_completed ON tasks(completed_at, key) WHERE completed_at IS NOT NULL",
        "INSERT OR REPLACE INTO settings (key, value) SELECT 'counter.quarantine_bytes',"
        " CAST(COALESCE(SUM(length(body)), 0) AS TEXT) FROM quarantine",
        """CREATE TRIGGER quarantine_bytes_added AFTER INSERT ON quarantine BEGIN
            UPDATE settings SET value = CAST(CAST(value AS INTEGER) + length(NEW.body) AS TEXT)
            WHERE key = 'counter.quarantine_bytes';
        END""",
        """CREATE TRIGGER quarantine_bytes_removed AFTER DELETE ON quarantine BEGIN
            UPDATE settings SET value = CAST(CAST(value AS INTEGER) - length(OLD.body) AS TEXT)
            WHERE key = 'counter.quarantine_bytes';
        END""",
    ],
    # 10: the events of one change share one copy of the task: the first holds the
    # body, each later one only its type and how many seqs back that body is (the
    # second event's ~2 KB was a fifth of a callback's bytes). Readers retype it.
    [
        "ALTER TABLE events ADD COLUMN data_back INTEGER",
    ],
    # 11: one index of deliveries by task, not two: (task_key, sha256) finds a task's
    # deliveries as well (a task has a handful; reading them in id order sorts that
    # handful). Each random-key index dirties a page of its own per callback: with
    # 200,000 deliveries this one cost 15 of a delivery's 42 µs of CPU.
    [
        "DROP INDEX IF EXISTS deliveries_task",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; returns the version it ends at.

    Runs under ``BEGIN IMMEDIATE`` and re-reads the version after taking the
    lock, so several processes starting together migrate exactly once.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        refuse_newer(version, SCHEMA_VERSION)
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
