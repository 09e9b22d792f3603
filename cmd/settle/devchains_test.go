package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckDevState(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		ok            bool
	}{
		{"empty (killed at the truncate)", "", false},
		{"cut short", `{"block":{"number":"0x10"},"accounts":{"0x70`, false},
		{"not json", "\x00\x00\x00", false},
		{"whole", `{"block":{"number":"0x10"},"accounts":{}}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			err := checkDevState(path)
			if (err == nil) != tc.ok {
				t.Fatalf("checkDevState: %v, want ok %v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "make dev-clean") {
				t.Errorf("the error does not say what to do: %v", err)
			}
		})
	}
	if err := checkDevState(filepath.Join(dir, "absent.json")); err != nil {
		t.Errorf("no state file yet (a fresh chain): %v", err)
	}
}
