-- Webhooks: merchants' endpoints, one delivery per (event, endpoint), and
-- every attempt. The outbox (0001, 0012) is the event log; the dispatcher
-- fans an outbox row out into deliveries and sets its delivered_at in one
-- transaction, so an event is either fanned out completely or not at all.
CREATE TABLE webhook_endpoints (
    id           text PRIMARY KEY CHECK (id ~ '^we_[A-Za-z0-9_-]{16,}$'),
    merchant_id  text NOT NULL REFERENCES merchants (id),
    url          text NOT NULL CHECK (length(url) <= 2048),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    -- Event types the endpoint wants; empty means every type.
    events       text[] NOT NULL DEFAULT '{}',
    -- Signing secrets ("whsec_" + base64). They are kept in the clear
    -- because signing needs them (an HMAC key cannot be hashed). During a
    -- rotation the previous secret signs too, until previous_expires_at.
    secret               text NOT NULL,
    previous_secret      text,
    previous_expires_at  timestamptz,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    -- The last 2xx, so a delivery that gives up can tell whether the
    -- endpoint failed for the whole retry window (then it is disabled).
    last_success_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((previous_secret IS NULL) = (previous_expires_at IS NULL)),
    CHECK (enabled OR disabled_reason IS NOT NULL)
);
CREATE INDEX webhook_endpoints_merchant_idx ON webhook_endpoints (merchant_id, created_at DESC, id DESC);

CREATE TABLE webhook_deliveries (
    id            bigserial PRIMARY KEY,
    outbox_id     bigint NOT NULL REFERENCES outbox (id),
    event_id      text NOT NULL,
    endpoint_id   text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- Copied from the event: a delivery waits while an earlier sequence of
    -- the same subject to the same endpoint is still pending.
    subject_id    text NOT NULL,
    sequence      bigint NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- A dispatcher's lease on an attempt in flight: the claim commits at
    -- once and the POST runs outside any transaction. If the dispatcher
    -- dies, the row is due again when the lease runs out (at least once).
    -- claim_token tells the claimant's outcome from a stale one's.
    claimed_until timestamptz,
    claim_token   bigint,
    last_error    text,
    -- When the retry window starts: the fan-out, or the last replay.
    created_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- The ordering check: earlier pending deliveries of a subject to an endpoint.
CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (endpoint_id, subject_id, sequence) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id  text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL,
    -- NULL when no response came (refused, timeout, reset).
    status_code  integer,
    latency_ms   integer NOT NULL,
    error        text
);
CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, at DESC, id DESC);
