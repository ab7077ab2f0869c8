//go:build unix

package discovery

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// execInOwnGroup starts the command in a process group of its own and makes
// cancellation kill that whole group, so that the children of a script (a
// curl, a sleep) die with it instead of outliving the fetch and holding stdout.
func execInOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
}
