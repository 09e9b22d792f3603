//go:build !linux

package anvil

import "os/exec"

// setProcAttr has no parent-death signal to set outside linux; Close must be
// called to stop the node there.
func setProcAttr(*exec.Cmd) {}
