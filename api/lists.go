package api

import (
	"errors"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/settle-dev/settle/internal/session"
	"github.com/settle-dev/settle/internal/store"
)

// The filters of GET /v1/sessions and GET /api/payments (README, "Listing
// sessions and payments"):
//
//	status=a,b&status=c      any of these statuses, as the objects show them
//	created_gte, created_lt  unix seconds, createdAt >= / <
//	receiverAddress          a receiver the session was given (EVM: any case)
//	depositTxHash            a deposit's transaction (EVM: any case)
//	externalId               the payment's externalId
//	metadata[key]=value      metadata holds key with exactly value; several AND
//
// Filters combine with AND. Status matches what the object says at the
// moment of the request, expiry on read included (store.ListQuery).
var listFilters = []string{"status", "created_gte", "created_lt", "receiverAddress", "depositTxHash", "externalId", "metadata[]"}

var (
	evmAddressPattern    = regexp.MustCompile(`^0x[0-9a-fA-F]{40}$`)
	base58AddressPattern = regexp.MustCompile(`^[1-9A-HJ-NP-Za-km-z]{32,44}$`)
)

// maxCreatedUnix is 9999-12-31T23:59:59Z: a bound later than that is a
// mistake (milliseconds?), not a date.
const maxCreatedUnix = 253402300799

// listSessions is GET /v1/sessions: the merchant's sessions (those the
// Payments API created included, as GET /v1/sessions/{id} serves them too),
// each exactly as GET /v1/sessions/{id} returns it to the API key.
func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromKey(r)
	if err != nil {
		return err
	}
	p, lq, err := parseSessionList(r.URL.Query(), sessionStatuses)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	lq.MerchantID, lq.Now = merchantID, now
	rows, err := s.listPage(r, p, lq)
	if err != nil {
		return err
	}
	objs := make([]sessionFull, len(rows))
	for i, ss := range rows {
		objs[i] = fullView(ss, ss.StatusAt(now))
	}
	writeList(w, p, objs, func(o sessionFull) string { return o.SessionID })
	return nil
}

// listPayments is GET /api/payments: the merchant's payments, each exactly
// as GET /api/payment/{id} returns it; starting_after is a payment id.
func (s *Server) listPayments(w http.ResponseWriter, r *http.Request) error {
	merchantID, err := s.merchantFromPaymentsKey(r)
	if err != nil {
		return err
	}
	p, lq, err := parseSessionList(r.URL.Query(), paymentStatuses)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	lq.MerchantID, lq.Now, lq.Payments = merchantID, now, true
	rows, err := s.listPage(r, p, lq)
	if err != nil {
		return err
	}
	objs := make([]paymentJSON, len(rows))
	for i, ss := range rows {
		objs[i] = paymentView(ss, now)
	}
	writeList(w, p, objs, func(o paymentJSON) string { return o.ID })
	return nil
}

func (s *Server) listPage(r *http.Request, p listParams, lq store.ListQuery) ([]*session.Session, error) {
	lq.StartingAfter, lq.Limit = p.StartingAfter, p.Fetch()
	rows, err := s.cfg.Store.ListSessions(r.Context(), lq)
	if errors.Is(err, store.ErrNotFound) {
		return nil, invalidCursor()
	}
	return rows, err
}

// sessionStatuses maps each status filter value of GET /v1/sessions onto
// the session statuses it matches.
var sessionStatuses = func() map[string][]session.Status {
	m := map[string][]session.Status{}
	for _, st := range []session.Status{session.RequiresPaymentMethod, session.WaitingPayment, session.Processing,
		session.Succeeded, session.Bounced, session.Expired} {
		m[string(st)] = []session.Status{st}
	}
	return m
}()

// paymentStatuses is the same for GET /api/payments, through
// session.PaymentStatusOf: payment_unpaid is every status that reads
// unpaid, so the filter agrees with the objects by construction.
var paymentStatuses = func() map[string][]session.Status {
	m := map[string][]session.Status{}
	for _, st := range []session.Status{session.RequiresPaymentMethod, session.WaitingPayment, session.Processing,
		session.Succeeded, session.Bounced, session.Expired} {
		ps := string(session.PaymentStatusOf(st))
		m[ps] = append(m[ps], st)
	}
	return m
}()

// parseSessionList reads the pagination and the filters of a session or
// payment list; statuses maps the status values it accepts.
func parseSessionList(q url.Values, statuses map[string][]session.Status) (listParams, store.ListQuery, error) {
	var lq store.ListQuery
	p, err := parseListParams(q, listFilters...)
	if err != nil {
		return p, lq, err
	}
	for name, vals := range q {
		if name != "status" && len(vals) > 1 {
			return p, lq, validationf(name, "invalid_value", "%s may be given once.", truncate(name, 64))
		}
	}
	if vals, ok := q["status"]; ok {
		seen := map[session.Status]bool{}
		for _, v := range vals {
			for _, one := range strings.Split(v, ",") {
				sts, ok := statuses[one]
				if !ok {
					return p, lq, validationf("status", "invalid_status", "status %q is not one of %s.", truncate(one, 40), statusNames(statuses))
				}
				for _, st := range sts {
					if !seen[st] {
						seen[st] = true
						lq.Statuses = append(lq.Statuses, st)
					}
				}
			}
		}
	}
	for name, dst := range map[string]*time.Time{"created_gte": &lq.CreatedGTE, "created_lt": &lq.CreatedLT} {
		if !q.Has(name) {
			continue
		}
		n, err := strconv.ParseInt(q.Get(name), 10, 64)
		if err != nil || n < 0 || n > maxCreatedUnix {
			return p, lq, validationf(name, "invalid_timestamp", "%s must be unix seconds (an integer from 0 to %d).", name, maxCreatedUnix)
		}
		*dst = time.Unix(n, 0)
	}
	if q.Has("receiverAddress") {
		a := q.Get("receiverAddress")
		if !evmAddressPattern.MatchString(a) && !base58AddressPattern.MatchString(a) {
			return p, lq, validationf("receiverAddress", "invalid_address", "receiverAddress must be a 0x-prefixed EVM address or a base58 Tron or Solana address.")
		}
		lq.ReceiverAddress = a
	}
	if q.Has("depositTxHash") {
		h := q.Get("depositTxHash")
		if !txHashPattern.MatchString(h) {
			return p, lq, validationf("depositTxHash", "invalid_tx_hash", "depositTxHash must be a 32-byte hex hash or a base58 Solana signature.")
		}
		if !strings.HasPrefix(h, "0x") && len(h) == 64 {
			h = "0x" + h // as txHashPattern allows and the indexer stores
		}
		lq.DepositTxHash = h
	}
	if q.Has("externalId") {
		e := q.Get("externalId")
		if e == "" || len(e) > maxExternalIDLen || !utf8.ValidString(e) {
			return p, lq, validationf("externalId", "invalid_value", "externalId must be 1 to %d bytes of text.", maxExternalIDLen)
		}
		lq.ExternalID = e
	}
	for name := range q {
		key, ok := strings.CutPrefix(name, "metadata[")
		if !ok {
			continue
		}
		key = strings.TrimSuffix(key, "]")
		v := q.Get(name)
		if utf8.RuneCountInString(key) > maxMetadataKeyLen || utf8.RuneCountInString(v) > maxMetadataValueLen || !utf8.ValidString(key+v) {
			return p, lq, validationf(name, "invalid_metadata", "metadata filters take keys of at most %d and values of at most %d characters.", maxMetadataKeyLen, maxMetadataValueLen)
		}
		if lq.Metadata == nil {
			lq.Metadata = map[string]string{}
		}
		lq.Metadata[key] = v
	}
	if len(lq.Metadata) > maxMetadataKeys {
		return p, lq, validationf("metadata", "too_many_keys", "At most %d metadata filters.", maxMetadataKeys)
	}
	return p, lq, nil
}

func statusNames(statuses map[string][]session.Status) string {
	names := slices.Sorted(maps.Keys(statuses)) // stable messages
	return strings.Join(names, ", ")
}
