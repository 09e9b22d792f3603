-- A payout of kind exception_refund cannot be represented without this
-- migration (and may be moving money): finish them first, or delete them
-- knowingly. Resolutions are lost; the operator ledger entries that
-- recorded them stay.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM payouts WHERE kind = 'exception_refund') THEN
        RAISE EXCEPTION 'payouts holds exception refunds: they cannot be kept by the schema before 0015; settle or delete them first';
    END IF;
END
$$;
DROP TABLE exception_resolutions;
DROP INDEX ledger_entries_operator_idx;
DROP INDEX payouts_parked_idx;
DROP INDEX ledger_entries_exceptions_idx;
DROP INDEX payouts_session_kind_idx;
ALTER TABLE payouts
    DROP CONSTRAINT payouts_exception_check,
    DROP COLUMN exception_id,
    DROP CONSTRAINT payouts_kind_check,
    ADD CONSTRAINT payouts_kind_check CHECK (kind IN ('delivery', 'refund')),
    ADD CONSTRAINT payouts_session_id_kind_key UNIQUE (session_id, kind);
