package finance

import (
	"os"
	"strings"
	"testing"
)

// The README shows these queries; they must be the ones the tests run.
func TestREADMEShowsTheTestedQueries(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string]string{"volume_per_day": VolumePerDay, "unaccounted_transfers": UnaccountedTransfers, "session_statement": SessionStatement} {
		if !strings.Contains(string(readme), strings.TrimSpace(q)) {
			t.Errorf("README.md does not contain docs/finance/%s.sql verbatim", name)
		}
	}
}
