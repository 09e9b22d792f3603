DROP INDEX IF EXISTS payouts_attention_idx;
DROP INDEX IF EXISTS payouts_runner_idx;
CREATE INDEX payouts_revoke_idx ON payouts (chain_id)
    WHERE (revoke_tx_hash IS NOT NULL AND NOT revoke_mined)
       OR (status = 'reverted' AND calldata IS NOT NULL AND revoke_tx_hash IS NULL);
UPDATE payouts SET status = 'pending' WHERE status = 'needs_attention';
ALTER TABLE payouts
    DROP CONSTRAINT payouts_status_check,
    ADD CONSTRAINT payouts_status_check CHECK (status IN ('pending', 'sent', 'mined', 'reverted', 'confirmed')),
    DROP COLUMN fund_raw_tx,
    DROP COLUMN fund_tx_hash,
    DROP COLUMN fund_nonce,
    DROP COLUMN call_gas,
    DROP COLUMN runner_address;
COMMENT ON COLUMN payouts.approve_nonce IS NULL;
COMMENT ON COLUMN payouts.revoke_tx_hash IS NULL;
