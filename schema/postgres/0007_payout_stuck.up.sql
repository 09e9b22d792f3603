-- failing_since: when the current run of failed attempts on a payout
-- began (NULL after a success); past the executor's StuckAfter the payout
-- moves to needs_attention instead of retrying forever.
-- attention_sent: a needs_attention payout whose signed transaction is
-- still in flight (e.g. stuck at the fee ceiling): the executor keeps
-- following its receipt and re-broadcasting the same bytes, but signs
-- nothing new for it.
ALTER TABLE payouts
    ADD COLUMN failing_since  timestamptz,
    ADD COLUMN attention_sent boolean NOT NULL DEFAULT false;
