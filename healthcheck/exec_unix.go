//go:build unix

package healthcheck

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// killProcessGroup starts the script in a process group of its own and makes
// cancellation kill that whole group, so that children of a shell script (a
// curl, a sleep) die with it instead of holding stdout open.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
}
