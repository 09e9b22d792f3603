DROP INDEX IF EXISTS payouts_unfinal_idx;
DROP INDEX IF EXISTS payouts_revoke_idx;
UPDATE payouts SET revoke_raw_tx = NULL WHERE revoke_mined;
CREATE INDEX payouts_revoke_idx ON payouts (chain_id)
    WHERE status = 'reverted' AND calldata IS NOT NULL AND (revoke_tx_hash IS NULL OR revoke_raw_tx IS NOT NULL);
ALTER TABLE payouts
    DROP COLUMN IF EXISTS revoke_mined,
    DROP COLUMN IF EXISTS receipt_final,
    DROP COLUMN IF EXISTS receipt_block_hash,
    DROP COLUMN IF EXISTS receipt_block_number;
