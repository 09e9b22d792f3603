package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/settle-dev/settle/internal/session"
)

// ListQuery selects one page of a merchant's sessions for ListSessions.
//
// Pages are keyset-paginated on (created_at, id), newest first: both are
// immutable and the pair is unique, so sessions inserted or changed while
// a client pages through neither shift a page (as OFFSET would) nor appear
// twice. Every filter has an index that reaches its rows without reading
// the merchant's other sessions (migration 0014), so a page costs the
// same at ten million sessions as at a thousand.
type ListQuery struct {
	MerchantID string
	// Payments restricts the list to sessions of the Payments API, and
	// makes StartingAfter a payment id instead of a session id.
	Payments bool
	// StartingAfter is the id (session or payment, see Payments) of the
	// session the page starts after; "" for the first page. One that is
	// not the merchant's gives ErrNotFound.
	StartingAfter string
	// Limit is how many sessions to return at most.
	Limit int

	// Statuses are statuses as Session.StatusAt(Now) reads them, not as
	// stored: a session past its deadline whose expiry the expiry loop has
	// not persisted yet matches expired, not waiting_payment, exactly as
	// GET shows it. Empty matches any.
	Statuses []session.Status
	// Now is the clock of Statuses' expiry on read; the caller renders the
	// page with StatusAt of the same instant.
	Now time.Time
	// CreatedGTE and CreatedLT bound created_at; zero is unbounded.
	CreatedGTE, CreatedLT time.Time
	// ReceiverAddress matches sessions that were given this receiver (any
	// of their payment methods). An EVM address matches in any letter
	// case; base58 ones (Tron, Solana) exactly.
	ReceiverAddress string
	// DepositTxHash matches sessions with a deposit in this transaction
	// (EVM: any letter case).
	DepositTxHash string
	// ExternalID matches the payment with this externalId.
	ExternalID string
	// Metadata matches sessions whose metadata holds every pair.
	Metadata map[string]string
}

// ListSessions returns the page of sessions q selects, newest first, each
// read exactly as GetSession reads it (latest payment method, receiver,
// attributed-through time), in one statement.
func (s *Store) ListSessions(ctx context.Context, q ListQuery) ([]*session.Session, error) {
	if q.Limit < 1 {
		return nil, fmt.Errorf("store: ListSessions with limit %d", q.Limit)
	}
	sqlText, args, err := s.listSQL(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.db(ctx).Query(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	defer rows.Close()
	var out []*session.Session
	for rows.Next() {
		// getSessionWhere decodes one row of selectSession; handing it the
		// current row keeps a single decoder for GET and lists, so a listed
		// object is the one GET returns.
		ss, err := getSessionWhere(ctx, currentRow{rows}, "", s.chains, "in list")
		if err != nil {
			return nil, err
		}
		out = append(out, ss)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	if len(out) == 0 && q.StartingAfter != "" {
		// An empty page after an unknown cursor is an error, not the end
		// of the list: tell which. Only empty pages pay for this lookup.
		var found bool
		err := s.db(ctx).QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sessions WHERE merchant_id = $1 AND `+cursorColumn(q)+` = $2)`,
			q.MerchantID, q.StartingAfter).Scan(&found)
		if err != nil {
			return nil, fmt.Errorf("looking up list cursor: %w", err)
		}
		if !found {
			return nil, fmt.Errorf("list cursor %q: %w", q.StartingAfter, ErrNotFound)
		}
	}
	return out, nil
}

// currentRow is a querier whose QueryRow is the current row of rows.
type currentRow struct{ rows pgx.Rows }

func (c currentRow) QueryRow(context.Context, string, ...any) pgx.Row { return c.rows }

func cursorColumn(q ListQuery) string {
	if q.Payments {
		return "payment_id"
	}
	return "id"
}

// listSQL builds the statement of a page. An inner query picks the page's
// ids from sessions alone, walking an index in (created_at, id) order; the
// outer one reads those sessions as selectSession does. A status filter is
// a UNION ALL of one ordered, limited branch per stored status (each an
// index range on (merchant_id, status, created_at, id)), merged and limited
// again: Postgres 15 cannot return "status IN (…)" in created_at order from
// one index scan, and sorting a merchant's whole status set would cost in
// proportion to it.
func (s *Store) listSQL(q ListQuery) (string, []any, error) {
	args := []any{q.MerchantID, s.chains} // $2 is selectSession's chains
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"merchant_id = $1"}
	if q.Payments {
		where = append(where, "payment_id IS NOT NULL")
	}
	var with []string
	if q.StartingAfter != "" {
		with = append(with, "cur AS (SELECT created_at, id FROM sessions WHERE merchant_id = $1 AND "+cursorColumn(q)+" = "+arg(q.StartingAfter)+")")
		// Scalar subqueries become parameters of one row comparison,
		// which the (created_at DESC, id DESC) indexes take as a range.
		where = append(where, "(created_at, id) < ((SELECT created_at FROM cur), (SELECT id FROM cur))")
	}
	if !q.CreatedGTE.IsZero() {
		where = append(where, "created_at >= "+arg(q.CreatedGTE))
	}
	if !q.CreatedLT.IsZero() {
		where = append(where, "created_at < "+arg(q.CreatedLT))
	}
	if a := q.ReceiverAddress; a != "" {
		// Through receivers' UNIQUE (family, address): EVM addresses are
		// stored lowercase; base58 is case-sensitive and could be Tron or
		// Solana.
		families := []string{"tron", "solana"}
		if strings.HasPrefix(a, "0x") || strings.HasPrefix(a, "0X") {
			families, a = []string{"evm"}, strings.ToLower(a)
		}
		where = append(where, "id IN (SELECT session_id FROM receivers WHERE family = ANY("+arg(families)+"::text[]) AND address = "+arg(a)+")")
	}
	if h := q.DepositTxHash; h != "" {
		if strings.HasPrefix(h, "0x") || strings.HasPrefix(h, "0X") {
			h = strings.ToLower(h) // as the indexer stores EVM hashes
		}
		where = append(where, "id IN (SELECT session_id FROM deposits WHERE tx_hash = "+arg(h)+")")
	}
	if q.ExternalID != "" {
		where = append(where, "external_id = "+arg(q.ExternalID))
	}
	if len(q.Metadata) > 0 {
		// The GIN index of 0014 is on {merchant_id: metadata}, so a pair
		// common to many merchants (orderId=1) only finds this merchant's.
		doc, err := json.Marshal(map[string]map[string]string{q.MerchantID: q.Metadata})
		if err != nil {
			return "", nil, fmt.Errorf("encoding metadata filter: %w", err)
		}
		// Materialized: left to itself, the planner guesses @> matches
		// many rows and walks the merchant's sessions in created_at order
		// testing each (seconds at millions of sessions) instead of asking
		// the index for the few that match.
		with = append(with, "md AS MATERIALIZED (SELECT id FROM sessions WHERE "+metadataKey+" @> "+arg(string(doc))+"::jsonb)")
		where = append(where, "id IN (SELECT id FROM md)")
	}
	limit := arg(q.Limit)
	const order = " ORDER BY created_at DESC, id DESC LIMIT "
	common := strings.Join(where, " AND ")
	var page string
	if len(q.Statuses) == 0 {
		page = "SELECT id, created_at FROM sessions WHERE " + common + order + limit
	} else {
		nowArg := ""
		now := func() string { // an unused parameter would have no type
			if nowArg == "" {
				nowArg = arg(q.Now)
			}
			return nowArg
		}
		branches := statusBranches(q.Statuses, now, attributedThrough("$2"))
		if len(branches) == 0 {
			return "", nil, errors.New("store: ListSessions with no known status")
		}
		parts := make([]string, len(branches))
		for i, b := range branches {
			cond := "status = " + arg(string(b.stored)) + "::session_status"
			if b.extra != "" {
				cond += " AND " + b.extra
			}
			parts[i] = "(SELECT id, created_at FROM sessions WHERE " + common + " AND " + cond + order + limit + ")"
		}
		page = "SELECT id, created_at FROM (" + strings.Join(parts, " UNION ALL ") + ") u" + order + limit
	}
	with = append(with, "page AS ("+page+")")
	return "WITH " + strings.Join(with, ", ") + " " + selectSession +
		"s.id IN (SELECT id FROM page) ORDER BY s.created_at DESC, s.id DESC", args, nil
}

// metadataKey is the indexed expression the metadata filter matches:
// {"<merchant_id>": metadata}. jsonb_set is immutable (jsonb_build_object
// is not), so it can be indexed.
const metadataKey = "jsonb_set('{}'::jsonb, ARRAY[merchant_id], metadata)"

type statusBranch struct {
	stored session.Status
	extra  string // more SQL condition on rows of that stored status; "" = none
}

// statusBranches maps statuses as StatusAt reads them onto stored statuses
// and the condition that makes a stored row read as one of them, in SQL
// that mirrors Session.StatusAt: an expirable session reads expired from
// its deadline on, except a waiting_payment one while some indexed chain
// has not attributed final blocks up to the deadline (att, the
// attributed-through time; NULL when no chain is indexed).
func statusBranches(want []session.Status, now func() string, att string) []statusBranch {
	has := map[session.Status]bool{}
	for _, st := range want {
		has[st] = true
	}
	expired := has[session.Expired]
	// readsExpired(st) is when a stored st reads expired.
	readsExpired := func(st session.Status) string {
		switch st {
		case session.RequiresPaymentMethod:
			return "expires_at <= " + now()
		case session.WaitingPayment:
			return "(expires_at <= " + now() + " AND (" + att + " IS NULL OR " + att + " >= expires_at))"
		}
		return ""
	}
	var out []statusBranch
	for _, st := range []session.Status{session.RequiresPaymentMethod, session.WaitingPayment, session.Processing,
		session.Succeeded, session.Bounced, session.Expired} {
		expirable := st.Expirable()
		switch {
		case !expirable && has[st]:
			out = append(out, statusBranch{stored: st})
		case !expirable:
		case has[st] && expired:
			out = append(out, statusBranch{stored: st})
		case has[st]:
			out = append(out, statusBranch{stored: st, extra: "NOT (" + readsExpired(st) + ")"})
		case expired:
			out = append(out, statusBranch{stored: st, extra: readsExpired(st)})
		}
	}
	return out
}
