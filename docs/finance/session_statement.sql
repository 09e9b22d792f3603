-- One session's statement: money in, money out, and what is held, in
-- 18-decimal units (stablecoins settle 1:1 across decimals). variance is
-- what came in and was neither delivered nor refunded (e.g. an overpayment).
-- held_e18 is what settle holds for a person to resolve, in the tokens it
-- accepts: late and after_session_finished deposits, what a merchant's call
-- returned (call_returned), net of reorgs, and an overpaid surplus once the
-- delivery is on the ledger (the session succeeded): until then the
-- delivery may revert, and a bounce refunds every deposit, surplus included.
-- An exception the merchant acted on (the exceptions inbox) is no longer
-- held: a credited one became a deposit (reason exception_credit), a
-- refunded one a refund (reason exception_refund, entry id
-- exception_refund:<the exception's entry id>); refunding a late or
-- after_session_finished deposit pays back money that was never
-- deposited, so it does not count against variance.
-- Where the deposits are: swept_e18 moved from the receiver to the
-- treasury (ledger_sweeps), in_receiver_e18 is still in the receiver, and
-- sweep_gas_wei is the native coin the treasury spent to sweep it.
-- Tokens settle does not accept (exceptions with reason wrong_token, often
-- spam) have unknown decimals and no stablecoin value, and their amounts
-- reach 2^256-1, far beyond Decimal(38): they are in no _e18 column.
-- wrong_token_transfers counts them, net of reorgs; the unaccounted
-- transfers query (unaccounted_transfers.sql) lists each with its exact
-- amount_raw.
SELECT session_id,
       sumIf(e18, kind = 'deposit') - sumIf(e18, kind = 'unapply' AND reason = 'reorg') AS deposited_e18,
       sumIf(e18, kind = 'delivery') AS delivered_e18,
       sumIf(e18, kind = 'refund') AS refunded_e18,
       sumIf(e18, kind = 'exception' AND reason != 'overpaid')
         + sumIf(e18, kind = 'exception' AND reason = 'overpaid') * (countIf(kind = 'delivery') > 0)
         - sumIf(e18, kind = 'unapply' AND reason = 'reorg_exception')
         - sumIf(e18, kind = 'deposit' AND reason = 'exception_credit')
         - sumIf(e18, kind = 'refund' AND reason = 'exception_refund') AS held_e18,
       deposited_e18 - delivered_e18 - refunded_e18 + sumIf(e18, held_refund) AS variance_e18,
       sumIf(e18, kind = 'sweep') AS swept_e18,
       deposited_e18 - swept_e18 AS in_receiver_e18,
       sumIf(amount, kind = 'sweep_gas') AS sweep_gas_wei,
       countIf(wrong_token AND kind = 'exception') - countIf(wrong_token AND kind = 'unapply') AS wrong_token_transfers
FROM (SELECT session_id, kind, reason, amount, wrong_token, held_refund,
             -- zeroed before scaling: ClickHouse evaluates every row of a
             -- sumIf, and a wrong token's amount overflows once scaled.
             if(wrong_token, toDecimal128(0, 0), amount) * intExp10(18 - decimals) AS e18
      FROM (SELECT session_id, toString(kind) AS kind, reason, decimals, amount,
                   reason = 'wrong_token' OR replaceOne(entry_id, 'unapply:', 'exception:') IN (
                       SELECT entry_id FROM ledger FINAL WHERE session_id = 'SESSION_ID' AND reason = 'wrong_token') AS wrong_token,
                   -- a product, not AND: 18.16 folds an AND with an empty IN
                   -- set to a constant, which UNION ALL then refuses.
                   toUInt8((reason = 'exception_refund') * (replaceOne(entry_id, 'exception_refund:', '') IN (
                       SELECT entry_id FROM ledger FINAL WHERE session_id = 'SESSION_ID'
                       AND reason IN ('late', 'after_session_finished')))) AS held_refund
            FROM ledger FINAL WHERE session_id = 'SESSION_ID'
            UNION ALL
            SELECT session_id, toString(kind) AS kind, '' AS reason, decimals, amount, 0 AS wrong_token, 0 AS held_refund
            FROM ledger_sweeps FINAL WHERE session_id = 'SESSION_ID'))
GROUP BY session_id
