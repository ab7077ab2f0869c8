package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gobetween/gobetween/config"
)

// CommandVersion is the envelope version this release writes and understands.
// A release that changes a command's shape bumps it; the FSM refuses versions it
// does not know rather than guessing.
const CommandVersion = 1

// CommandType names what a Command does.
type CommandType string

// The command types of envelope version 1.
const (
	PutServer     CommandType = "put_server"
	DeleteServer  CommandType = "delete_server"
	SetOverride   CommandType = "set_override"
	ClearOverride CommandType = "clear_override"
	// PutBlob stores Value under the key Name; DeleteBlob removes the key. Blobs
	// are opaque bytes that nodes share through the log (the ACME account key,
	// certificates and challenge tokens); the FSM never looks inside them.
	PutBlob    CommandType = "put_blob"
	DeleteBlob CommandType = "delete_blob"
	// PutDiscovered records what a cluster-scope discovery fetched for the
	// server Name (Discovered): every node balances over that set. Only the
	// leader proposes it.
	PutDiscovered CommandType = "put_discovered"
)

// MaxBlobSize caps a blob's value: every node keeps every blob in memory and in
// each snapshot, so blobs are for small things (an ACME certificate chain with
// its key is about 4 KiB).
const MaxBlobSize = 64 << 10

// Origins of a server definition.
const (
	OriginConfig = "config" // a node's config file, upserted at start and on reload
	OriginAPI    = "api"    // the REST API
	OriginURL    = "url"    // a node's config from a URL (gobetween from-url)
	OriginConsul = "consul" // a node's config from Consul KV (gobetween from-consul)
)

// IsSourceOrigin reports whether origin is a node's config source (a file,
// a URL, Consul KV) rather than the API: such servers are upserted at start and
// on reload, pruned when the source drops them, and never overwrite an API
// change.
func IsSourceOrigin(origin string) bool {
	return origin == OriginConfig || origin == OriginURL || origin == OriginConsul
}

// Override actions. Enabling a backend clears its override.
const (
	ActionDrain   = "drain"
	ActionDisable = "disable"
)

// Command is the typed, versioned envelope stored in the Raft log, JSON-encoded.
// Everything that varies between nodes (the time, defaults) is resolved by the
// proposer before the command enters the log, so applying it is deterministic.
type Command struct {
	Version    int            `json:"v"`
	Type       CommandType    `json:"type"`
	Name       string         `json:"name"`                  // the server's name; for blobs, the blob's key
	Server     *config.Server `json:"server,omitempty"`      // put_server: the normalised definition
	Origin     string         `json:"origin,omitempty"`      // put_server: OriginAPI or a source origin (IsSourceOrigin)
	IfRevision uint64         `json:"if_revision,omitempty"` // put/delete: only if the server's revision equals this; 0 = any
	IfAbsent   bool           `json:"if_absent,omitempty"`   // put: only if no server has the name
	Backend    string         `json:"backend,omitempty"`     // overrides: host:port
	Action     string         `json:"action,omitempty"`      // set_override: ActionDrain or ActionDisable
	Value      []byte         `json:"value,omitempty"`       // put_blob: the blob, at most MaxBlobSize bytes
	Discovered *Discovered    `json:"discovered,omitempty"`  // put_discovered: the fetch's result
	Time       time.Time      `json:"time"`                  // set by the proposer; the FSM never reads the clock
}

// Errors of applying a command. Node.Apply wraps them with the command's context;
// test with errors.Is.
var (
	ErrExists         = errors.New("a server with this name exists")
	ErrNotFound       = errors.New("no such server")
	ErrStale          = errors.New("revision does not match (stale If-Match)")
	ErrOriginConflict = errors.New("the server was changed through the API; the config source does not overwrite it")
	ErrInvalidCommand = errors.New("invalid command")
)

// Validate checks the envelope's shape: the version, the type and the fields the
// type needs. It does not validate a server definition: that is the proposer's job
// (config validation may change between releases; the FSM must not).
func (c *Command) Validate() error {
	if c.Version != CommandVersion {
		return fmt.Errorf("%w: unsupported version %d", ErrInvalidCommand, c.Version)
	}
	if c.Name == "" {
		if c.Type == PutBlob || c.Type == DeleteBlob {
			return fmt.Errorf("%w: %s without a key", ErrInvalidCommand, c.Type)
		}
		return fmt.Errorf("%w: %s without a server name", ErrInvalidCommand, c.Type)
	}
	switch c.Type {
	case PutServer:
		if c.Server == nil {
			return fmt.Errorf("%w: put_server without a server definition", ErrInvalidCommand)
		}
		if !IsSourceOrigin(c.Origin) && c.Origin != OriginAPI {
			return fmt.Errorf("%w: unknown origin %q", ErrInvalidCommand, c.Origin)
		}
	case DeleteServer:
	case SetOverride:
		if c.Action != ActionDrain && c.Action != ActionDisable {
			return fmt.Errorf("%w: unknown override action %q (want drain or disable)", ErrInvalidCommand, c.Action)
		}
		if err := checkBackend(c.Backend); err != nil {
			return err
		}
	case ClearOverride:
		if err := checkBackend(c.Backend); err != nil {
			return err
		}
	case PutBlob:
		if len(c.Value) > MaxBlobSize {
			return fmt.Errorf("%w: blob %q of %d bytes exceeds %d", ErrInvalidCommand, c.Name, len(c.Value), MaxBlobSize)
		}
	case DeleteBlob:
	case PutDiscovered:
		if c.Discovered == nil {
			return fmt.Errorf("%w: put_discovered without a result", ErrInvalidCommand)
		}
	default:
		return fmt.Errorf("%w: unknown type %q", ErrInvalidCommand, c.Type)
	}
	return nil
}

func checkBackend(b string) error {
	host, port, err := net.SplitHostPort(b)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%w: backend %q is not host:port", ErrInvalidCommand, b)
	}
	return nil
}

// decodeCommand decodes and validates one log entry's data.
func decodeCommand(data []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(data, &c); err != nil {
		return Command{}, fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	if err := c.Validate(); err != nil {
		return Command{}, err
	}
	return c, nil
}
