-- The block of the receipt that decided 'mined' or 'reverted'. The
-- executor watches that block until it is final: a reorg that removes it
-- sends the payout back to 'sent' (the same signed bytes are broadcast
-- again), and a reverted call is refunded only once its revert is final,
-- because a re-mined call may succeed after all.
ALTER TABLE payouts
    ADD COLUMN receipt_block_number bigint,
    ADD COLUMN receipt_block_hash   text,
    ADD COLUMN receipt_final        boolean NOT NULL DEFAULT false,
    -- A mined revoke keeps its signed bytes (revoke_raw_tx) until the
    -- payout is final: a reorg may drop it, and its nonce must then be
    -- filled by the same transaction again.
    ADD COLUMN revoke_mined         boolean NOT NULL DEFAULT false;
UPDATE payouts SET revoke_mined = true WHERE revoke_tx_hash IS NOT NULL AND revoke_raw_tx IS NULL;
CREATE INDEX payouts_unfinal_idx ON payouts (chain_id)
    WHERE status IN ('mined', 'reverted') AND NOT receipt_final;
DROP INDEX payouts_revoke_idx;
CREATE INDEX payouts_revoke_idx ON payouts (chain_id)
    WHERE (revoke_tx_hash IS NOT NULL AND NOT revoke_mined)
       OR (status = 'reverted' AND calldata IS NOT NULL AND revoke_tx_hash IS NULL);
