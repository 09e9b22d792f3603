-- One session's statement: money in, money out, and what is held, in
-- 18-decimal units (stablecoins settle 1:1 across decimals). variance is
-- what came in and was neither delivered nor refunded (e.g. an overpayment).
SELECT session_id,
       sumIf(amount * intExp10(18 - decimals), kind = 'deposit')
         - sumIf(amount * intExp10(18 - decimals), kind = 'unapply' AND reason = 'reorg') AS deposited_e18,
       sumIf(amount * intExp10(18 - decimals), kind = 'delivery') AS delivered_e18,
       sumIf(amount * intExp10(18 - decimals), kind = 'refund') AS refunded_e18,
       sumIf(amount * intExp10(18 - decimals), kind = 'exception')
         - sumIf(amount * intExp10(18 - decimals), kind = 'unapply' AND reason = 'reorg_exception') AS held_e18,
       deposited_e18 - delivered_e18 - refunded_e18 AS variance_e18
FROM ledger FINAL
WHERE session_id = 'SESSION_ID'
GROUP BY session_id
