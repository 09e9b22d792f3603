package api

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestParseListParams(t *testing.T) {
	long := strings.Repeat("a", maxCursorLen+1)
	tests := []struct {
		query     string
		filters   []string
		want      listParams
		wantParam string // "" = no error
		wantCode  string
	}{
		{query: "", want: listParams{Limit: 20}},
		{query: "limit=1", want: listParams{Limit: 1}},
		{query: "limit=100", want: listParams{Limit: 100}},
		{query: "limit=0", wantParam: "limit", wantCode: "invalid_limit"},
		{query: "limit=101", wantParam: "limit", wantCode: "invalid_limit"},
		{query: "limit=-1", wantParam: "limit", wantCode: "invalid_limit"},
		{query: "limit=abc", wantParam: "limit", wantCode: "invalid_limit"},
		{query: "limit=1.5", wantParam: "limit", wantCode: "invalid_limit"},
		{query: "limit=", wantParam: "limit", wantCode: "invalid_limit"},
		{query: "limit=99999999999999999999", wantParam: "limit", wantCode: "invalid_limit"},
		{query: "limit=5&limit=6", wantParam: "limit", wantCode: "invalid_value"},
		{query: "starting_after=abc", want: listParams{Limit: 20, StartingAfter: "abc"}},
		{query: "starting_after=", wantParam: "starting_after", wantCode: "invalid_cursor"},
		{query: "starting_after=" + long, wantParam: "starting_after", wantCode: "invalid_cursor"},
		{query: "starting_after=a&starting_after=b", wantParam: "starting_after", wantCode: "invalid_value"},
		{query: "status=open", wantParam: "status", wantCode: "unknown_parameter"},
		{query: "status=open&status=x", filters: []string{"status"}, want: listParams{Limit: 20}},
		{query: "Limit=5", wantParam: "Limit", wantCode: "unknown_parameter"},
		{query: "metadata[orderId]=1", filters: []string{"metadata[]"}, want: listParams{Limit: 20}},
		{query: "metadata[]=1", filters: []string{"metadata[]"}, wantParam: "metadata[]", wantCode: "unknown_parameter"},
		{query: "metadata=1", filters: []string{"metadata[]"}, wantParam: "metadata", wantCode: "unknown_parameter"},
		{query: "metadata[a=1", filters: []string{"metadata[]"}, wantParam: "metadata[a", wantCode: "unknown_parameter"},
		{query: "metadatax[a]=1", filters: []string{"metadata[]"}, wantParam: "metadatax[a]", wantCode: "unknown_parameter"},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseListParams(q, tc.filters...)
			if tc.wantParam == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				if got != tc.want {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want an *Error", err)
			}
			if e.Status != 400 || e.Type != typeValidation || e.Param != tc.wantParam || e.Code != tc.wantCode {
				t.Fatalf("err = %+v, want 400 %s param %q code %q", e, typeValidation, tc.wantParam, tc.wantCode)
			}
		})
	}
}

func TestWriteList(t *testing.T) {
	type obj struct {
		ID string `json:"id"`
	}
	objs := func(ids ...string) []obj {
		var out []obj
		for _, id := range ids {
			out = append(out, obj{id})
		}
		return out
	}
	tests := []struct {
		name    string
		limit   int
		objects []obj
		want    string
	}{
		{"empty", 3, nil, `{"data":[],"hasMore":false,"nextCursor":null}`},
		{"fewer than limit", 3, objs("c", "b"), `{"data":[{"id":"c"},{"id":"b"}],"hasMore":false,"nextCursor":null}`},
		{"exactly limit", 2, objs("c", "b"), `{"data":[{"id":"c"},{"id":"b"}],"hasMore":false,"nextCursor":null}`},
		{"one more than limit", 2, objs("c", "b", "a"), `{"data":[{"id":"c"},{"id":"b"}],"hasMore":true,"nextCursor":"b"}`},
		{"limit 1", 1, objs("c", "b"), `{"data":[{"id":"c"}],"hasMore":true,"nextCursor":"c"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writeList(rec, listParams{Limit: tc.limit}, tc.objects, func(o obj) string { return o.ID })
			if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			var got, want any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal([]byte(tc.want), &want)
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(want)
			if string(gb) != string(wb) {
				t.Fatalf("body %s, want %s", gb, wb)
			}
		})
	}
}
