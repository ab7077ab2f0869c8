package main

import (
	"runtime/debug"
	"strings"
)

// Set by the linker (see the Makefile's LDFLAGS). A binary built without them
// (go build, go install) takes what the Go toolchain stamped into it instead: the
// module version for `go install ...@vX.Y.Z`, the VCS revision for a build inside
// a git checkout (see buildStamp).
var (
	version  = "dev"
	revision = ""
	branch   = ""
)

func init() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	version, revision = buildStamp(info, version, revision)
}

// buildStamp fills in what the linker flags left at their defaults from the
// build information: the main module's version (not "(devel)") and the
// vcs.revision setting, shortened as git does, with "-dirty" when vcs.modified.
func buildStamp(info *debug.BuildInfo, ver, rev string) (string, string) {
	var vcsRev string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			vcsRev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if len(vcsRev) > 12 {
		vcsRev = vcsRev[:12]
	}
	if rev == "" {
		rev = vcsRev
	}
	if ver == "dev" {
		switch v := info.Main.Version; {
		case v != "" && v != "(devel)" && !strings.HasPrefix(v, "v0.0.0-"):
			ver = strings.TrimPrefix(v, "v")
		case vcsRev != "":
			ver = "dev-" + vcsRev
			if modified {
				ver += "-dirty"
			}
		}
	}
	return ver, rev
}

// versionString is what --version prints: gobetween VERSION (REVISION, BRANCH).
func versionString() string {
	s := "gobetween " + version
	if revision != "" {
		s += " (" + revision
		if branch != "" {
			s += ", " + branch
		}
		s += ")"
	}
	return s
}
