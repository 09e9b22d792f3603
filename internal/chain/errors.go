package chain

import "fmt"

// chainError carries a specific, human-readable message while unwrapping to
// one of the package's sentinel errors, so callers can branch with errors.Is
// and still show the message verbatim.
type chainError struct {
	kind error
	msg  string
}

func (e *chainError) Error() string { return e.msg }
func (e *chainError) Unwrap() error { return e.kind }

// quoteInput quotes s for an error message, truncating it so that a huge
// hostile input cannot blow up logs or API responses.
func quoteInput(s string) string {
	const limit = 50
	if len(s) > limit {
		return fmt.Sprintf("%q... (%d bytes)", s[:limit], len(s))
	}
	return fmt.Sprintf("%q", s)
}
