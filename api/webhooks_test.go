package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/settle-dev/settle/api"
	"github.com/settle-dev/settle/webhook"
)

// lateWebhooks lets the test build the webhook store after setup made the
// database.
type lateWebhooks struct{ api.WebhookStore }

func setupWebhooks(t *testing.T) *bundle {
	t.Helper()
	ws := &lateWebhooks{}
	b := setup(t, func(c *api.Config) { c.Webhooks = ws })
	ws.WebhookStore = webhook.NewStore(b.db.PG, webhook.Policy{})
	return b
}

func TestWebhookEndpointsAPI(t *testing.T) {
	b := setupWebhooks(t)
	auth := []string{"Authorization", "Bearer " + b.key}
	authB := []string{"Authorization", "Bearer " + b.keyB}

	if r := b.do("POST", "/v1/webhooks", map[string]any{"url": "https://hooks.example.com/a"}); r.Status != 401 {
		t.Errorf("without a key: %d", r.Status)
	}
	for _, tc := range []struct {
		body  map[string]any
		param string
	}{
		{map[string]any{}, "url"},
		{map[string]any{"url": "http://hooks.example.com/a"}, "url"},
		{map[string]any{"url": "https://127.0.0.1/a"}, "url"},
		{map[string]any{"url": "https://169.254.169.254/latest"}, "url"},
		{map[string]any{"url": "https://hooks.example.com/a", "events": []string{"session.nope"}}, "events"},
		{map[string]any{"url": "https://hooks.example.com/a", "description": strings.Repeat("d", 501)}, "description"},
		{map[string]any{"url": "https://hooks.example.com/a", "secret": "mine"}, "secret"},
	} {
		r := b.do("POST", "/v1/webhooks", tc.body, auth...)
		e, _ := r.Body["error"].(map[string]any)
		if r.Status != 400 || e["type"] != "validation_error" || e["param"] != tc.param {
			t.Errorf("create %v: %d %s, want 400 validation_error on %s", tc.body, r.Status, r.Raw, tc.param)
		}
	}

	var ids []string
	for _, u := range []string{"https://hooks.example.com/a", "https://hooks.example.com/b"} {
		r := b.do("POST", "/v1/webhooks", map[string]any{"url": u, "events": []string{"session.succeeded", "session.processing", "session.succeeded"}}, auth...)
		if r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Raw)
		}
		if s, _ := r.Body["secret"].(string); !strings.HasPrefix(s, "whsec_") {
			t.Errorf("create answer has no secret: %s", r.Raw)
		}
		if ev, _ := r.Body["events"].([]any); len(ev) != 2 || r.Body["enabled"] != true {
			t.Errorf("create answer %s", r.Raw)
		}
		ids = append(ids, r.Body["id"].(string))
	}
	other := b.do("POST", "/v1/webhooks", map[string]any{"url": "https://hooks.example.com/c"}, authB...)
	if other.Status != 201 {
		t.Fatalf("create for B: %d %s", other.Status, other.Raw)
	}
	otherID := other.Body["id"].(string)

	// Pages: newest first, no secrets, one at a time.
	r := b.do("GET", "/v1/webhooks?limit=1", nil, auth...)
	data, _ := r.Body["data"].([]any)
	if r.Status != 200 || len(data) != 1 || r.Body["hasMore"] != true || r.Body["nextCursor"] != ids[1] || strings.Contains(r.Raw, "whsec_") {
		t.Fatalf("first page: %d %s", r.Status, r.Raw)
	}
	r = b.do("GET", "/v1/webhooks?limit=1&starting_after="+ids[1], nil, auth...)
	data, _ = r.Body["data"].([]any)
	if r.Status != 200 || len(data) != 1 || data[0].(map[string]any)["id"] != ids[0] || r.Body["hasMore"] != false || r.Body["nextCursor"] != nil {
		t.Fatalf("second page: %d %s", r.Status, r.Raw)
	}
	for _, q := range []string{"limit=0", "limit=101", "starting_after=" + otherID, "starting_after=we_nope", "status=enabled"} {
		if r := b.do("GET", "/v1/webhooks?"+q, nil, auth...); r.Status != 400 {
			t.Errorf("list ?%s: %d %s", q, r.Status, r.Raw)
		}
	}

	if r := b.do("GET", "/v1/webhooks/"+ids[0], nil, auth...); r.Status != 200 || r.Body["secret"] != nil {
		t.Errorf("get: %d %s", r.Status, r.Raw)
	}
	for _, path := range []string{"/v1/webhooks/" + otherID, "/v1/webhooks/" + otherID + "/attempts"} {
		if r := b.do("GET", path, nil, auth...); r.Status != 404 {
			t.Errorf("another merchant's %s: %d", path, r.Status)
		}
	}
	if r := b.do("DELETE", "/v1/webhooks/"+otherID, nil, auth...); r.Status != 404 {
		t.Errorf("deleting another merchant's endpoint: %d", r.Status)
	}

	rot := b.do("POST", "/v1/webhooks/"+ids[0]+"/rotate-secret", nil, auth...)
	if s, _ := rot.Body["secret"].(string); rot.Status != 200 || !strings.HasPrefix(s, "whsec_") || rot.Body["previousSecretExpiresAt"] == nil {
		t.Errorf("rotate: %d %s", rot.Status, rot.Raw)
	}

	if r := b.do("POST", "/v1/webhooks/"+ids[0]+"/enable", nil, auth...); r.Status != 200 || r.Body["enabled"] != true {
		t.Errorf("enable: %d %s", r.Status, r.Raw)
	}
	if r := b.do("POST", "/v1/webhooks/"+otherID+"/enable", nil, auth...); r.Status != 404 {
		t.Errorf("enabling another merchant's endpoint: %d", r.Status)
	}
	test := b.do("POST", "/v1/webhooks/"+ids[0]+"/test", nil, auth...)
	eventID, _ := test.Body["eventId"].(string)
	if test.Status != 202 || !strings.HasPrefix(eventID, "evt_") {
		t.Fatalf("test: %d %s", test.Status, test.Raw)
	}
	var n int
	if err := b.db.PG.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2`, eventID, ids[0]).Scan(&n); err != nil || n != 1 {
		t.Errorf("test event deliveries %d, %v", n, err)
	}
	if r := b.do("POST", "/v1/events/"+eventID+"/replay?endpoint="+ids[0], nil, auth...); r.Status != 202 || r.Body["deliveries"] != float64(1) {
		t.Errorf("replay: %d %s", r.Status, r.Raw)
	}
	if r := b.do("POST", "/v1/events/"+eventID+"/replay", nil, authB...); r.Status != 404 {
		t.Errorf("another merchant's replay: %d %s", r.Status, r.Raw)
	}
	if r := b.do("POST", "/v1/events/"+eventID+"/replay?endpoint="+otherID, nil, auth...); r.Status != 400 {
		t.Errorf("replay to another merchant's endpoint: %d %s", r.Status, r.Raw)
	}
	r = b.do("GET", "/v1/webhooks/"+ids[0]+"/attempts", nil, auth...)
	if data, ok := r.Body["data"].([]any); r.Status != 200 || !ok || len(data) != 0 || r.Body["hasMore"] != false {
		t.Errorf("attempts: %d %s", r.Status, r.Raw)
	}
	if r := b.do("GET", "/v1/webhooks/"+ids[0]+"/attempts?starting_after=wha_999", nil, auth...); r.Status != 400 {
		t.Errorf("attempts with an unknown cursor: %d %s", r.Status, r.Raw)
	}

	if r := b.do("DELETE", "/v1/webhooks/"+ids[0], nil, auth...); r.Status != 200 || r.Body["deleted"] != true {
		t.Errorf("delete: %d %s", r.Status, r.Raw)
	}
	if r := b.do("GET", "/v1/webhooks/"+ids[0], nil, auth...); r.Status != 404 {
		t.Errorf("get after delete: %d", r.Status)
	}
	if r := b.do("PUT", "/v1/webhooks", nil, auth...); r.Status != 405 {
		t.Errorf("PUT /v1/webhooks: %d", r.Status)
	}
}
