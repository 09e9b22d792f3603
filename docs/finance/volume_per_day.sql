-- Credited deposit volume per merchant, chain and token per day (block
-- time), net of deposits a reorg removed.
SELECT day, merchant_id, chain_id, symbol, token,
       count() AS deposits,
       sum(amount) AS units
FROM ledger FINAL
WHERE kind = 'deposit'
  AND replaceOne(entry_id, 'deposit:', 'unapply:') NOT IN (SELECT entry_id FROM ledger FINAL WHERE kind = 'unapply')
GROUP BY day, merchant_id, chain_id, symbol, token
ORDER BY day, merchant_id, chain_id, symbol
