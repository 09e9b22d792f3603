DROP TABLE IF EXISTS treasury_nonces, payouts, deposits, reconciler_cursors;
DROP TYPE IF EXISTS deposit_status;
