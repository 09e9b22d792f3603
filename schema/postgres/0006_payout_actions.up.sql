-- Operators act on the payouts the executor parked in needs_attention
-- (`settle payouts list|retry|abandon`). abandoned: an operator took the
-- payout out of the executor's hands for good; the executor never touches
-- it again and its session is settled by hand.
ALTER TABLE payouts
    DROP CONSTRAINT payouts_status_check,
    ADD CONSTRAINT payouts_status_check
        CHECK (status IN ('pending', 'sent', 'mined', 'reverted', 'confirmed', 'needs_attention', 'abandoned'));

-- Every operator action is a ledger entry of kind operator (amount 0: no
-- money moves), with who did it and why. ClickHouse keeps these in
-- ledger_operator, not in ledger (see schema/clickhouse/0006).
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_kind_check,
    ADD CONSTRAINT ledger_entries_kind_check
        CHECK (kind IN ('deposit', 'exception', 'unapply', 'delivery', 'refund', 'operator')),
    ADD COLUMN operator text NOT NULL DEFAULT '',
    ADD COLUMN note     text NOT NULL DEFAULT '';
