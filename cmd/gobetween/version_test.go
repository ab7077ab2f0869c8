package main

import (
	"runtime/debug"
	"testing"
)

func TestBuildStamp(t *testing.T) {
	vcs := func(rev string, modified bool) []debug.BuildSetting {
		m := "false"
		if modified {
			m = "true"
		}
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: m}}
	}
	const full = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name             string
		mainVersion      string
		settings         []debug.BuildSetting
		ver, rev         string // what the linker set
		wantVer, wantRev string
	}{
		{"linker flags win", "(devel)", vcs(full, false), "1.2.3", "abc1234", "1.2.3", "abc1234"},
		{"go install @version", "v1.4.0", nil, "dev", "", "1.4.0", ""},
		{"go build in a checkout", "(devel)", vcs(full, false), "dev", "", "dev-0123456789ab", "0123456789ab"},
		{"dirty checkout", "(devel)", vcs(full, true), "dev", "", "dev-0123456789ab-dirty", "0123456789ab"},
		{"pseudo-version is not a release", "v0.0.0-20261124000000-0123456789ab", vcs(full, false), "dev", "", "dev-0123456789ab", "0123456789ab"},
		{"nothing stamped", "(devel)", nil, "dev", "", "dev", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &debug.BuildInfo{Main: debug.Module{Version: tt.mainVersion}, Settings: tt.settings}
			ver, rev := buildStamp(info, tt.ver, tt.rev)
			if ver != tt.wantVer || rev != tt.wantRev {
				t.Errorf("buildStamp = %q, %q; want %q, %q", ver, rev, tt.wantVer, tt.wantRev)
			}
		})
	}
}
