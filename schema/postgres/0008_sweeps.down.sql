DELETE FROM ledger_entries WHERE kind IN ('sweep', 'sweep_gas');
ALTER TABLE ledger_entries
    DROP CONSTRAINT ledger_entries_kind_check,
    ADD CONSTRAINT ledger_entries_kind_check
        CHECK (kind IN ('deposit', 'exception', 'unapply', 'delivery', 'refund', 'operator'));
DROP INDEX IF EXISTS deposits_unswept_idx;
ALTER TABLE deposits DROP COLUMN sweep_id;
DROP TABLE sweeps;
