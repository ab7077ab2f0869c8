// Package e2e drives the built gobetween binary from outside: it writes a config,
// starts the process, runs in-process backends and real clients on loopback, then
// kills, restarts, reloads and signals them and checks what clients see.
//
// Everything lives in the _test.go files; see README.md for what is covered and
// how to run one test.
package e2e
