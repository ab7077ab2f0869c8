package healthcheck

import (
	"net"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

func TestPing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	checker, err := NewChecker(config.Healthcheck{Kind: "ping"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		target config.Target
		pass   bool
	}{
		{"listening", targetOf(t, ln.Addr().String()), true},
		{"nothing listening", closedTarget(t), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checker.Check(checkCtx(t, 2*time.Second), tc.target)
			if (err == nil) != tc.pass {
				t.Fatalf("Check = %v, want pass %v", err, tc.pass)
			}
		})
	}
}

func TestNewChecker(t *testing.T) {
	tests := []struct {
		name    string
		cfg     config.Healthcheck
		wantNil bool
		wantErr bool
	}{
		{"none", config.Healthcheck{Kind: "none"}, true, false},
		{"empty kind", config.Healthcheck{}, true, false},
		{"ping", config.Healthcheck{Kind: "ping"}, false, false},
		{"unknown kind", config.Healthcheck{Kind: "http"}, true, true},
		{"probe", config.Healthcheck{Kind: "probe", ProbeProtocol: "tcp", ProbeSend: "x", ProbeRecv: "y"}, false, false},
		{"probe bad protocol", config.Healthcheck{Kind: "probe", ProbeProtocol: "sctp", ProbeSend: "x", ProbeRecv: "y"}, true, true},
		{"probe bad escape", config.Healthcheck{Kind: "probe", ProbeProtocol: "tcp", ProbeSend: `\xZZ`, ProbeRecv: "y"}, true, true},
		{"probe bad regexp", config.Healthcheck{Kind: "probe", ProbeProtocol: "tcp", ProbeSend: "x", ProbeRecv: "(", ProbeStrategy: "regexp", ProbeRecvLen: 4}, true, true},
		{"probe regexp without length", config.Healthcheck{Kind: "probe", ProbeProtocol: "tcp", ProbeSend: "x", ProbeRecv: "y", ProbeStrategy: "regexp"}, true, true},
		{"probe bad strategy", config.Healthcheck{Kind: "probe", ProbeProtocol: "tcp", ProbeSend: "x", ProbeRecv: "y", ProbeStrategy: "contains"}, true, true},
		{"exec", config.Healthcheck{Kind: "exec", ExecCommand: "/bin/true"}, false, false},
		{"exec without command", config.Healthcheck{Kind: "exec"}, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewChecker(tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if (c == nil) != tc.wantNil {
				t.Fatalf("checker = %v, want nil %v", c, tc.wantNil)
			}
		})
	}
}
