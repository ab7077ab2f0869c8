package config

import (
	"net"
)

// Target identifies a backend: its host and port as discovered (hosts are not
// resolved here). Host holds an IPv6 address without brackets.
type Target struct {
	Host string `json:"host"`
	Port string `json:"port"`
}

// Address is host:port for dialing ("[::1]:80" for IPv6).
func (t Target) Address() string { return net.JoinHostPort(t.Host, t.Port) }

// String is Address.
func (t Target) String() string { return t.Address() }

// Backend is one discovered backend with the properties discovery gives it.
type Backend struct {
	Target
	Priority       int    `json:"priority"`
	Weight         int    `json:"weight"`
	MaxConnections int    `json:"max_connections,omitempty"`
	Sni            string `json:"sni,omitempty"`
}
