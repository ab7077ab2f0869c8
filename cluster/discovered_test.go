package cluster

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gobetween/gobetween/config"
)

func TestFSMDiscovered(t *testing.T) {
	b := func(hostport string) config.Backend {
		be, err := config.ParseBackend(hostport)
		if err != nil {
			t.Fatal(err)
		}
		return be
	}
	put := func(name string, d *Discovered) Command {
		return Command{Type: PutDiscovered, Name: name, Discovered: d}
	}
	tests := []struct {
		name    string
		cmds    []Command
		wantErr error
		check   func(t *testing.T, s *State)
	}{
		{name: "put", cmds: []Command{put("web", &Discovered{Backends: []config.Backend{b("10.0.0.1:80")}, Fetched: t0, By: "n1"})},
			check: func(t *testing.T, s *State) {
				d := s.Discovered["web"]
				if len(d.Backends) != 1 || d.Backends[0].Address() != "10.0.0.1:80" || !d.Fetched.Equal(t0) || d.By != "n1" || d.Error != "" {
					t.Fatalf("discovered %+v", d)
				}
			}},
		{name: "a failed fetch is recorded", cmds: []Command{
			put("web", &Discovered{Backends: []config.Backend{b("10.0.0.1:80")}}),
			put("web", &Discovered{Backends: []config.Backend{b("10.0.0.1:80")}, Error: "timed out"}),
		}, check: func(t *testing.T, s *State) {
			if d := s.Discovered["web"]; d.Error != "timed out" || len(d.Backends) != 1 {
				t.Fatalf("discovered %+v", d)
			}
		}},
		{name: "unknown server", cmds: []Command{put("nope", &Discovered{})}, wantErr: ErrNotFound},
		{name: "no result", cmds: []Command{{Type: PutDiscovered, Name: "web"}}, wantErr: ErrInvalidCommand},
		{name: "deleting the server drops its result", cmds: []Command{
			put("web", &Discovered{Backends: []config.Backend{b("10.0.0.1:80")}}),
			{Type: DeleteServer, Name: "web"},
		}, check: func(t *testing.T, s *State) {
			if _, ok := s.Discovered["web"]; ok {
				t.Fatal("web's discovered set survived its deletion")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seeded(t)
			var err error
			for _, c := range tt.cmds {
				before := stateJSON(t, f.State())
				prev := f.State()
				res := applyAt(f, enc(t, c))
				err = res.Err
				if stateJSON(t, prev) != before {
					t.Fatal("the published state was mutated")
				}
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, f.State())
			}
		})
	}
}

// A snapshot carries the discovered sets; one written before they existed
// restores with none.
func TestDiscoveredSnapshot(t *testing.T) {
	f := seeded(t)
	be, _ := config.ParseBackend("10.0.0.9:81 weight=3")
	if res := applyAt(f, enc(t, Command{Type: PutDiscovered, Name: "web", Discovered: &Discovered{Backends: []config.Backend{be}, Fetched: t0}})); res.Err != nil {
		t.Fatal(res.Err)
	}
	var buf bytes.Buffer
	if err := encodeSnapshot(&buf, f.State()); err != nil {
		t.Fatal(err)
	}
	s, err := decodeSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.Discovered["web"]; len(d.Backends) != 1 || d.Backends[0].Weight != 3 || !d.Fetched.Equal(t0) {
		t.Fatalf("restored %+v", d)
	}
	old, err := decodeSnapshot(bytes.NewBufferString(`{"v":1,"revision":3,"servers":{},"overrides":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if old.Discovered == nil || len(old.Discovered) != 0 {
		t.Fatalf("old snapshot: %+v", old.Discovered)
	}
}
