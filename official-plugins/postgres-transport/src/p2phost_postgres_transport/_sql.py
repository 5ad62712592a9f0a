"""The statements of the PostgreSQL medium: the tables, appends and the claim."""

from __future__ import annotations

SCHEMA_LOCK = 0x70327068  # an advisory lock id: one node creates the tables at a time
SCHEMA = """
CREATE TABLE IF NOT EXISTS p2phost_inboxes (
    name text PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS p2phost_inbox_records (
    id bigserial PRIMARY KEY,
    inbox text NOT NULL REFERENCES p2phost_inboxes (name) ON DELETE CASCADE,
    body bytea NOT NULL,
    leased boolean NOT NULL DEFAULT false
);
ALTER TABLE p2phost_inbox_records ADD COLUMN IF NOT EXISTS
    created timestamptz NOT NULL DEFAULT now();
ALTER TABLE p2phost_inboxes
    ADD COLUMN IF NOT EXISTS max_age float8 NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS max_messages bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS max_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS expired bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS p2phost_inbox_records_free
    ON p2phost_inbox_records (inbox, id) WHERE NOT leased;
"""
# Whether the tables are as SCHEMA makes them. Read from the catalogs, it takes no lock
# on the tables: SCHEMA's ALTER TABLE takes an exclusive one even when it changes nothing,
# and would queue every other node's reads and writes behind any open transaction.
SCHEMA_CURRENT = """
SELECT to_regclass('p2phost_inbox_records_free') IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('p2phost_inbox_records')
               AND attname = 'created' AND NOT attisdropped)
   AND (SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('p2phost_inboxes')
        AND attname IN ('max_age', 'max_messages', 'max_bytes', 'expired')
        AND NOT attisdropped) = 4
"""
_INSERT = """
WITH added AS (
    INSERT INTO p2phost_inbox_records (inbox, body)
    SELECT %(inbox)s, body FROM unnest(%(bodies)b::bytea[]) WITH ORDINALITY AS r(body, n)
    ORDER BY n
    RETURNING 1
)
"""
APPEND = _INSERT + "SELECT pg_notify(%(channel)s, '')"
# Frames: visible (and notified) at once, their commit not waiting for the disk; the
# append returns only after FLUSH, whose commit waits for the WAL through this one's.
# The reader claims and hands on the records while the disk writes them, and the
# database-wide lock that orders NOTIFY-ing commits is not held across that wait (it
# would hold up every other inbox's notifications: the credits of this connection too).
# A server crash in between loses records the reader may have handled: the append then
# fails and is retried, and the reader drops the copies.
APPEND_EARLY = (_INSERT + "SELECT pg_notify(%(channel)s, ''), "
                "set_config('synchronous_commit', 'off', true)")
# A transaction that writes WAL (a logical-decoding message, which changes no table and
# that decoders ignore unless asked for 'p2phost'), so its commit waits for the flush.
FLUSH = "SELECT pg_logical_emit_message(true, 'p2phost', '')"
# Whether this role may run FLUSH (granted to everyone unless revoked).
CAN_FLUSH = """
SELECT coalesce(has_function_privilege(
    to_regprocedure('pg_logical_emit_message(boolean,text,text)'), 'EXECUTE'), false)
"""
# Credits: each is also the payload of its notification (hex), so a sender waiting for
# room reads it there, without waiting for a claim; the row is the copy that survives a
# reader that was not listening (taken as usual, then dropped as a duplicate credit).
APPEND_CREDITS = """
WITH added AS (
    INSERT INTO p2phost_inbox_records (inbox, body)
    SELECT %(inbox)s, body FROM unnest(%(bodies)b::bytea[]) AS r(body)
    RETURNING body
)
SELECT pg_notify(%(channel)s, CASE WHEN octet_length(body) <= 3000
                                   THEN encode(body, 'hex') ELSE '' END) FROM added
"""
# A body larger than the third parameter is not returned (NULL; octet_length reads only
# the stored size): :data:`BODY` fetches it when its turn comes, so a claim holds at most
# so many small bodies and one large one. Its size comes with it: a body larger than the
# node reads is never fetched.
CLAIM = """
UPDATE p2phost_inbox_records SET leased = true
WHERE id IN (
    SELECT id FROM p2phost_inbox_records WHERE inbox = %s AND NOT leased
    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
)
RETURNING id, CASE WHEN octet_length(body) <= %s THEN body END, octet_length(body)
"""
# The reader connection's server process (when it started: with its pid, it names the
# process; a pid alone is reused), and whether the previous reader connection's is gone:
# ended (the signal cuts a statement still running there, which rolls back), waiting up
# to the first parameter (ms) for it to exit. True when there is no such process, or
# when it is not a reader of this inbox (its application_name, the last parameter).
END_PREVIOUS = """
SELECT (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
       coalesce((SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity
                 WHERE pid = %s AND backend_start = %s AND application_name = %s), true)
"""
BODY = "SELECT body FROM p2phost_inbox_records WHERE id = %s"
DELETE = "DELETE FROM p2phost_inbox_records WHERE id = %s"
# A record's header, sender and inbox fit in its first 256 bytes (a body too large to
# read is refused through them).
HEAD = "SELECT substring(body FROM 1 FOR 256) FROM p2phost_inbox_records WHERE id = %s"

