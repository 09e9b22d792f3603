package api

// Shared pieces of every list endpoint (sessions, payments, events,
// exceptions, webhooks, attempts). A list handler does three things:
//
//	p, err := parseListParams(r.URL.Query(), "status", "created_gte") // its own filter names
//	if err != nil { return err }
//	// resolve p.StartingAfter to a keyset position within the merchant's
//	// own objects; not found (or another merchant's) → return invalidCursor()
//	rows, err := store.ListX(ctx, merchantID, cursor, p.Fetch(), filters...)
//	writeList(w, p, render(rows), func(o objJSON) string { return o.ID })
//
// The store fetches p.Fetch() = Limit+1 rows, newest first by an immutable
// unique key (created_at DESC, id DESC); the extra row only tells writeList
// that there is a next page and is never sent.
//
// The envelope is {"data":[...], "hasMore":bool, "nextCursor":"<id>"|null}.
// nextCursor is the id of the last object in data when hasMore is true and
// null otherwise, so a client pages with
// starting_after=<nextCursor> until nextCursor is null.

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Page sizes of every list.
const (
	defaultListLimit = 20
	maxListLimit     = 100
	// maxCursorLen bounds starting_after before any lookup: every object
	// id is far shorter.
	maxCursorLen = 128
)

// listParams are the pagination parameters of a list request.
type listParams struct {
	// Limit is the page size, 1..maxListLimit.
	Limit int
	// StartingAfter is the id of the object the page starts after (the
	// previous page's nextCursor); "" for the first page. It is only
	// bounded in length here: the handler resolves it within the
	// merchant's own objects and answers invalidCursor() when it is not
	// one of them.
	StartingAfter string
}

// Fetch is how many rows to ask the store for: one more than the page, so
// writeList can tell whether another page follows.
func (p listParams) Fetch() int { return p.Limit + 1 }

// parseListParams reads limit and starting_after from q and refuses any
// other parameter that is not one of filters (a 400 unknown_parameter:
// a misspelt filter must not silently return everything). A filter name
// ending in "[]" admits the family name[<key>] for any non-empty key, e.g.
// "metadata[]" admits metadata[orderId]. limit and starting_after may
// appear once each; filters may repeat (the handler decides what that
// means).
func parseListParams(q url.Values, filters ...string) (listParams, error) {
	p := listParams{Limit: defaultListLimit}
	for name, vals := range q {
		switch name {
		case "limit", "starting_after":
			if len(vals) != 1 {
				return p, validationf(name, "invalid_value", "%s may be given once.", name)
			}
		default:
			if !filterAllowed(name, filters) {
				return p, validationf(name, "unknown_parameter", "Unknown query parameter %q.", truncate(name, 64))
			}
		}
	}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxListLimit {
			return p, validationf("limit", "invalid_limit", "limit must be an integer from 1 to %d.", maxListLimit)
		}
		p.Limit = n
	}
	if q.Has("starting_after") {
		c := q.Get("starting_after")
		if c == "" || len(c) > maxCursorLen {
			return p, invalidCursor()
		}
		p.StartingAfter = c
	}
	return p, nil
}

func filterAllowed(name string, filters []string) bool {
	for _, f := range filters {
		if family, ok := strings.CutSuffix(f, "[]"); ok {
			if key, ok := strings.CutPrefix(name, family+"["); ok && len(key) > 1 && strings.HasSuffix(key, "]") {
				return true
			}
			continue
		}
		if name == f {
			return true
		}
	}
	return false
}

// invalidCursor is the answer for a starting_after that is not the id of
// one of the merchant's objects in this list: unknown, malformed and
// another merchant's ids get the same 400, so ids cannot be probed.
func invalidCursor() *Error {
	return validationf("starting_after", "invalid_cursor", "starting_after must be the id of an object in this list (the nextCursor of a previous page).")
}

// listEnvelope is the body of every list answer.
type listEnvelope[T any] struct {
	Data       []T     `json:"data"`
	HasMore    bool    `json:"hasMore"`
	NextCursor *string `json:"nextCursor"`
}

// writeList answers 200 with the list envelope. objects are the rendered
// rows the store returned for p (at most p.Fetch(), newest first); id
// returns an object's id, the cursor of the next page.
func writeList[T any](w http.ResponseWriter, p listParams, objects []T, id func(T) string) {
	writeJSON(w, http.StatusOK, listPage(p, objects, id))
}

func listPage[T any](p listParams, objects []T, id func(T) string) listEnvelope[T] {
	env := listEnvelope[T]{Data: objects}
	if len(objects) > p.Limit {
		env.Data, env.HasMore = objects[:p.Limit], true
		c := id(env.Data[len(env.Data)-1])
		env.NextCursor = &c
	}
	if env.Data == nil {
		env.Data = []T{} // "data":[] , never null
	}
	return env
}
