ALTER TABLE payouts DROP COLUMN attention_sent, DROP COLUMN failing_since;
