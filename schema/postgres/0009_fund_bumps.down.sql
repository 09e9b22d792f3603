ALTER TABLE payouts DROP COLUMN fund_sent_at, DROP COLUMN fund_prior_tx_hashes;
