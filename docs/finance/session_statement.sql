-- One session's statement: money in, money out, and what is held, in
-- 18-decimal units (stablecoins settle 1:1 across decimals). variance is
-- what came in and was neither delivered nor refunded (e.g. an overpayment).
-- Where the deposits are: swept_e18 moved from the receiver to the
-- treasury (ledger_sweeps), in_receiver_e18 is still in the receiver, and
-- sweep_gas_wei is the native coin the treasury spent to sweep it.
SELECT session_id,
       sumIf(amount * intExp10(18 - decimals), kind = 'deposit')
         - sumIf(amount * intExp10(18 - decimals), kind = 'unapply' AND reason = 'reorg') AS deposited_e18,
       sumIf(amount * intExp10(18 - decimals), kind = 'delivery') AS delivered_e18,
       sumIf(amount * intExp10(18 - decimals), kind = 'refund') AS refunded_e18,
       sumIf(amount * intExp10(18 - decimals), kind = 'exception')
         - sumIf(amount * intExp10(18 - decimals), kind = 'unapply' AND reason = 'reorg_exception') AS held_e18,
       deposited_e18 - delivered_e18 - refunded_e18 AS variance_e18,
       sumIf(amount * intExp10(18 - decimals), kind = 'sweep') AS swept_e18,
       deposited_e18 - swept_e18 AS in_receiver_e18,
       sumIf(amount, kind = 'sweep_gas') AS sweep_gas_wei
FROM (SELECT session_id, toString(kind) AS kind, reason, decimals, amount FROM ledger FINAL WHERE session_id = 'SESSION_ID'
      UNION ALL
      SELECT session_id, toString(kind) AS kind, '' AS reason, decimals, amount FROM ledger_sweeps FINAL WHERE session_id = 'SESSION_ID')
GROUP BY session_id
