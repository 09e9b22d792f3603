ALTER TABLE reconciler_cursors DROP COLUMN final_block_time, DROP COLUMN final_number;
ALTER TABLE deposits DROP COLUMN applications;
DROP INDEX sessions_settle_due_idx;
ALTER TABLE sessions DROP COLUMN settle_wait, DROP COLUMN settle_check_at;
