//go:build linux

package anvil

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel SIGKILL anvil when its parent dies, so a
// SIGKILLed test binary or `settle dev` never leaves a chain listening.
// Pdeathsig fires when the creating OS thread exits, which is why Start
// launches and waits on the child from one goroutine locked to its thread.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
