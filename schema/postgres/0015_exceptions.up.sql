-- The exceptions inbox (GET /v1/exceptions): what a merchant did about a
-- deposit that did not count (a ledger entry of kind exception) or about a
-- payout that needs attention.
--
-- An exception is open until it has a row here, and gets at most one: the
-- unique keys are what makes "refunded at most once" hold under concurrent
-- requests (the second insert waits for the first and then fails). The
-- ledger entry itself is never changed: the ledger is append-only.
--   refund  → refunded: a payout of kind exception_refund pays the
--             exception's amount back (refund_payout_id);
--   credit  → credited: the deposit now counts toward its session;
--   resolve → resolved: marked done by hand, with a note.
-- Every action also writes a ledger entry of kind operator (who: the API
-- key, what, when, the note) in the same transaction (audit_entry_id).
CREATE TABLE exception_resolutions (
    id               bigserial PRIMARY KEY,
    -- Exactly one of: the exception's ledger entry, or the payout in
    -- needs_attention (exc_payout_<id> in the API).
    ledger_entry_id  bigint UNIQUE REFERENCES ledger_entries (id),
    payout_id        bigint UNIQUE REFERENCES payouts (id),
    merchant_id      text NOT NULL REFERENCES merchants (id),
    action           text NOT NULL CHECK (action IN ('refund', 'credit', 'resolve')),
    status           text NOT NULL,
    note             text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    api_key_id       text NOT NULL REFERENCES api_keys (id),
    refund_payout_id bigint UNIQUE REFERENCES payouts (id),
    audit_entry_id   bigint NOT NULL UNIQUE REFERENCES ledger_entries (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(ledger_entry_id, payout_id) = 1),
    CHECK (status = CASE action WHEN 'refund' THEN 'refunded' WHEN 'credit' THEN 'credited' ELSE 'resolved' END),
    CHECK ((action = 'refund') = (refund_payout_id IS NOT NULL)),
    CHECK (action <> 'resolve' OR length(note) > 0)
);

-- A refund of one exception: kind exception_refund, keyed by the
-- exception's ledger entry, so an exception is refunded at most once even
-- if the resolution row were bypassed. A session still has at most one
-- delivery and one refund (its bounce), whatever number of its exceptions
-- are refunded; the reconciler's ON CONFLICT names that partial key.
ALTER TABLE payouts
    ADD COLUMN exception_id bigint UNIQUE REFERENCES ledger_entries (id),
    DROP CONSTRAINT payouts_kind_check,
    ADD CONSTRAINT payouts_kind_check CHECK (kind IN ('delivery', 'refund', 'exception_refund')),
    ADD CONSTRAINT payouts_exception_check CHECK ((kind = 'exception_refund') = (exception_id IS NOT NULL)),
    DROP CONSTRAINT payouts_session_id_kind_key;
CREATE UNIQUE INDEX payouts_session_kind_idx ON payouts (session_id, kind) WHERE kind IN ('delivery', 'refund');

-- The inbox lists a merchant's exceptions newest first by (recorded_at,
-- id): immutable, so pages neither skip nor repeat under inserts.
CREATE INDEX ledger_entries_exceptions_idx ON ledger_entries (merchant_id, recorded_at DESC, id DESC) WHERE kind = 'exception';
-- Payouts an operator has to look at are few; the inbox reads them by
-- status.
CREATE INDEX payouts_parked_idx ON payouts (created_at DESC, id DESC) WHERE status IN ('needs_attention', 'abandoned');
-- Operator entries by session (few): when an operator abandoned a payout.
CREATE INDEX ledger_entries_operator_idx ON ledger_entries (session_id) WHERE kind = 'operator';
