//go:build !unix

package healthcheck

import "os/exec"

// killProcessGroup keeps exec.CommandContext's default, killing the script
// process alone: process groups are a unix notion.
func killProcessGroup(cmd *exec.Cmd) {}
