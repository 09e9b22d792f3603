-- Every transfer that reached one of our receivers and is not a credited
-- deposit of a session that was paid out (succeeded) or refunded (bounced):
-- wrong tokens, late or extra deposits, and deposits still in flight.
SELECT t.chain_id, t.block_number, t.tx_hash, t.log_index, t.token, t.from_address, t.to_address, t.amount_raw, r.session_id
FROM (SELECT * FROM transfers FINAL WHERE deleted = 0) AS t
ANY INNER JOIN (SELECT address AS to_address, session_id FROM receivers FINAL) AS r USING to_address
WHERE (t.chain_id, t.tx_hash, t.log_index) NOT IN (
    SELECT chain_id, tx_hash, log_index FROM ledger FINAL
    WHERE kind = 'deposit'
      AND session_id IN (SELECT session_id FROM ledger FINAL WHERE kind IN ('delivery', 'refund')))
ORDER BY t.chain_id, t.block_number, t.log_index
