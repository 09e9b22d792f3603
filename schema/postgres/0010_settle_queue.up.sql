-- Settle's queue is ordered by when a session next needs a decision, not
-- by when it last changed: a session Settle cannot act on yet (an
-- underpayment before its deadline, a refund that needs a person) is
-- parked until then, out of the way of every other session. A change that
-- may decide it (a deposit becoming final, applied or removed) makes it due
-- at once ('-infinity'). settle_wait says why a parked session waits.
ALTER TABLE sessions
    ADD COLUMN settle_check_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN settle_wait     text;
CREATE INDEX sessions_settle_due_idx ON sessions (settle_check_at, id) WHERE status = 'processing';

-- A deposit can be applied, removed by a reorg and applied again when its
-- block comes back (A→B→A). Each application has its own ledger lines:
-- applications counts them, and the second and later carry it in their
-- entry ids.
ALTER TABLE deposits ADD COLUMN applications integer NOT NULL DEFAULT 1;

-- The time of the newest final block each reconciler has attributed: a
-- deadline is known to have passed with nothing in time only on data no
-- reorg can change.
ALTER TABLE reconciler_cursors
    ADD COLUMN final_number     bigint,
    ADD COLUMN final_block_time timestamptz;
