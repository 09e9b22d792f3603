-- The outbox becomes the event log. Each row is one event, written by one
-- function (store.RecordEvent) inside the transaction of the change it
-- reports; payload is the complete body a webhook delivers:
--   {"id","type","sequence","createdAt","isTestEvent","data":{"object",…}}
-- event_id is the id receivers dedupe on (stable across retries).
-- sequence counts a subject's events 1, 2, 3, … in commit order: it comes
-- from sessions.event_seq, incremented by UPDATE … RETURNING, which holds
-- the session's row lock to the commit, so two changes of one session can
-- neither draw the same number nor commit out of order.
ALTER TABLE sessions ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;

ALTER TABLE outbox
    ADD COLUMN event_id text,
    ADD COLUMN sequence bigint,
    ADD COLUMN is_test  boolean NOT NULL DEFAULT false;

-- Existing rows were never sent. Their topics take the new names: a
-- payment method set is session.waiting_payment; a payment's session
-- reports under the payment's id with the Payments API's types. A
-- payment's created, waiting and expired rows have no Payments API type
-- and carried nothing beyond the session row (a status stub): dropped.
UPDATE outbox SET topic = 'session.waiting_payment' WHERE topic = 'session.payment_method_set';
DELETE FROM outbox o USING sessions s
WHERE s.id = o.subject_id AND s.payment_id IS NOT NULL
  AND o.topic NOT IN ('session.processing', 'session.succeeded', 'session.bounced');
UPDATE outbox o SET
    subject_id = s.payment_id,
    topic = CASE o.topic WHEN 'session.processing' THEN 'payment_started'
        WHEN 'session.succeeded' THEN 'payment_completed' ELSE 'payment_bounced' END,
    payload = jsonb_build_object('id', s.payment_id, 'status', CASE o.topic WHEN 'session.processing' THEN 'payment_started'
        WHEN 'session.succeeded' THEN 'payment_completed' ELSE 'payment_bounced' END)
FROM sessions s WHERE s.id = o.subject_id AND s.payment_id IS NOT NULL;

-- Their payload becomes an event body around the old stub object. No
-- webhook endpoint existed when they were written, so none is owed them:
-- they are marked fanned out, and stay listable in GET /v1/events.
WITH numbered AS (
    SELECT id, row_number() OVER (PARTITION BY subject_id ORDER BY id) AS seq,
        'evt_' || replace(gen_random_uuid()::text, '-', '') AS eid
    FROM outbox
)
UPDATE outbox o SET
    event_id = n.eid,
    sequence = n.seq,
    delivered_at = COALESCE(o.delivered_at, now()),
    payload = jsonb_build_object('id', n.eid, 'type', o.topic, 'sequence', n.seq,
        'createdAt', extract(epoch FROM o.created_at)::bigint::text, 'isTestEvent', false,
        'data', jsonb_build_object('object', o.payload))
FROM numbered n WHERE n.id = o.id;

UPDATE sessions s SET event_seq = c.n
FROM (SELECT subject_id, count(*) AS n FROM outbox GROUP BY subject_id) c
WHERE c.subject_id = s.id OR c.subject_id = s.payment_id;

ALTER TABLE outbox
    ALTER COLUMN event_id SET NOT NULL,
    ALTER COLUMN sequence SET NOT NULL,
    ADD CONSTRAINT outbox_event_id_key UNIQUE (event_id),
    ADD CONSTRAINT outbox_subject_sequence_key UNIQUE (subject_id, sequence);

-- GET /v1/events: a merchant's events newest first, optionally of one
-- subject or one type; keyset pagination on (created_at, id).
CREATE INDEX outbox_merchant_created_idx ON outbox (merchant_id, created_at DESC, id DESC);
CREATE INDEX outbox_merchant_subject_idx ON outbox (merchant_id, subject_id, created_at DESC, id DESC);
CREATE INDEX outbox_merchant_topic_idx ON outbox (merchant_id, topic, created_at DESC, id DESC);
