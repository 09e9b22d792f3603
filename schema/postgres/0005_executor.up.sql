-- Merchant calldata no longer runs from the treasury (approve, call,
-- revoke): the treasury funds a single-use runner address (fund_*), then
-- calls SettleExecutor.execute (nonce, tx_hash, raw_tx), which deploys the
-- runner there; the runner approves, calls, revokes and returns what the
-- call did not take, all in that one transaction. See
-- contracts/SettleExecutor.sol.
--
-- A call payout still in flight under the old scheme cannot be carried
-- over (its approval is live on chain): finish it with the previous
-- release first.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM payouts WHERE calldata IS NOT NULL AND (
            (status IN ('pending', 'sent') AND approve_tx_hash IS NOT NULL)
         OR (status = 'reverted' AND tx_hash IS NOT NULL AND revoke_tx_hash IS NULL)
         OR (revoke_tx_hash IS NOT NULL AND NOT revoke_mined))) THEN
        RAISE EXCEPTION 'payouts with calldata are in flight under the approve-and-call scheme: run the previous settle delivery until they finish, then migrate';
    END IF;
END
$$;
ALTER TABLE payouts
    -- The runner's CREATE2 address, which commits to the token, amount,
    -- target, calldata and call_gas: funds sent there can only run this
    -- payout's call.
    ADD COLUMN runner_address text,
    -- The gas the merchant's call gets, fixed when the runner is funded.
    ADD COLUMN call_gas       bigint,
    ADD COLUMN fund_nonce     bigint,
    ADD COLUMN fund_tx_hash   text,
    ADD COLUMN fund_raw_tx    bytea,
    DROP CONSTRAINT payouts_status_check,
    -- needs_attention: the executor cannot make progress on its own (the
    -- reason is in error); an operator retries or abandons it.
    ADD CONSTRAINT payouts_status_check
        CHECK (status IN ('pending', 'sent', 'mined', 'reverted', 'confirmed', 'needs_attention'));
COMMENT ON COLUMN payouts.approve_nonce IS 'legacy: approvals of the approve-and-call scheme before 0005';
COMMENT ON COLUMN payouts.revoke_tx_hash IS 'legacy: revokes of the approve-and-call scheme before 0005';
DROP INDEX payouts_revoke_idx;
CREATE INDEX payouts_runner_idx ON payouts (runner_address) WHERE runner_address IS NOT NULL;
CREATE INDEX payouts_attention_idx ON payouts (chain_id) WHERE status = 'needs_attention';
