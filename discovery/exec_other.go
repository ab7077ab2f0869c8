//go:build !unix

package discovery

import "os/exec"

// execInOwnGroup keeps exec.CommandContext's default, killing the command
// alone: process groups are a unix notion.
func execInOwnGroup(cmd *exec.Cmd) {}
