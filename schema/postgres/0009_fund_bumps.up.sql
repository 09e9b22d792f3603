-- A runner's funding is bumped like the main transaction: earlier
-- signings of its nonce (any may be the one mined) and when the newest was
-- stored.
ALTER TABLE payouts
    ADD COLUMN fund_prior_tx_hashes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN fund_sent_at         timestamptz;
