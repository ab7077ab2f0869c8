package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr string
	}{
		{"short config", []string{"-c", "a.toml"}, options{command: "run", configPath: "a.toml", format: "toml"}, ""},
		{"long flags", []string{"--config", "a.json", "--format", "json", "--use-config-env-vars", "--pidfile", "/run/g.pid", "--strict"},
			options{command: "run", configPath: "a.json", format: "json", env: true, pidfile: "/run/g.pid", strict: true}, ""},
		{"from-file", []string{"from-file", "b.toml", "-e"}, options{command: "run", configPath: "b.toml", format: "toml", env: true}, ""},
		{"validate", []string{"validate", "-c", "c.toml", "--strict"}, options{command: "validate", configPath: "c.toml", format: "toml", strict: true}, ""},
		{"version", []string{"-v"}, options{command: "run", format: "toml", version: true}, ""},
		{"stop grace", []string{"-c", "a.toml", "--stop-grace", "3s"}, options{command: "run", configPath: "a.toml", format: "toml", stopGrace: 3 * time.Second}, ""},
		{"negative stop grace", []string{"-c", "a.toml", "--stop-grace", "-1s"}, options{}, "--stop-grace must not be negative"},
		{"help for no command", []string{"help", "nosuch"}, options{}, `no help for "nosuch"`},
		{"no config", []string{}, options{}, "no config file"},
		{"bad format", []string{"-c", "a", "-f", "yaml"}, options{}, "--format must be toml or json"},
		{"unknown command", []string{"from-nowhere", "x"}, options{}, `unknown command "from-nowhere"`},
		{"from-file without file", []string{"from-file"}, options{}, "from-file needs a FILE"},
		{"stray argument", []string{"-c", "a.toml", "extra"}, options{}, "unexpected arguments: extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestArgv(t *testing.T) {
	tests := []struct {
		name    string
		cmdline []string
		env     string
		want    []string
		wantErr bool
	}{
		{"command line", []string{"-c", "x"}, "", []string{"-c", "x"}, false},
		{"env", nil, `["-c","/etc/g.toml"]`, []string{"-c", "/etc/g.toml"}, false},
		{"both", []string{"-c", "x"}, `["-c","y"]`, nil, true},
		{"bad json", nil, `-c x`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := argv(tt.cmdline, tt.env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProblemLines(t *testing.T) {
	err := errors.Join(errors.New("a: 1"), errors.Join(errors.New("b: 2"), errors.New("c: 3")), fmt.Errorf("d: %w", errors.New("4")))
	got := strings.Join(problemLines(err), "|")
	if got != "a: 1|b: 2|c: 3|d: 4" {
		t.Fatalf("got %q", got)
	}
}

func TestWritePidfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "g.pid")
	if err := writePidfile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("pid file = %q, %v", b, err)
	}
	// A file naming another live process (our parent) is refused.
	if err := os.WriteFile(path, []byte(fmt.Sprint(os.Getppid())), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePidfile(path); err == nil || !strings.Contains(err.Error(), "running") {
		t.Fatalf("err = %v, want refusal", err)
	}
	// A stale file (no such process) is overwritten.
	if err := os.WriteFile(path, []byte("999999999"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePidfile(path); err != nil {
		t.Fatal(err)
	}
}
