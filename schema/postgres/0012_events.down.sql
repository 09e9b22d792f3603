DROP INDEX IF EXISTS outbox_merchant_topic_idx, outbox_merchant_subject_idx, outbox_merchant_created_idx;
ALTER TABLE outbox
    DROP CONSTRAINT IF EXISTS outbox_subject_sequence_key,
    DROP CONSTRAINT IF EXISTS outbox_event_id_key,
    DROP COLUMN IF EXISTS is_test,
    DROP COLUMN IF EXISTS sequence,
    DROP COLUMN IF EXISTS event_id;
ALTER TABLE sessions DROP COLUMN IF EXISTS event_seq;
