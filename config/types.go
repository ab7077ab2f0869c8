// Package config holds the types of the gobetween configuration file (gobetween 0.8
// compatible), its decoding from TOML and JSON, defaults, validation with path-like
// errors, environment substitution and the backend line grammar.
//
// The types here are the desired state: plain values, safe to copy, never mutated
// by the runtime. Live counters and listeners belong to package proxy.
package config

// Config is a whole configuration file.
type Config struct {
	Logging  Logging           `toml:"logging" json:"logging"`
	Api      Api               `toml:"api" json:"api"`
	Metrics  Metrics           `toml:"metrics" json:"metrics"`
	Profiler Profiler          `toml:"profiler" json:"profiler"`
	Defaults ConnectionOptions `toml:"defaults" json:"defaults"`
	Acme     *Acme             `toml:"acme" json:"acme"`
	Cluster  *Cluster          `toml:"cluster" json:"cluster,omitempty"`
	Servers  map[string]Server `toml:"servers" json:"servers"`
}

// Logging is the [logging] section.
type Logging struct {
	Level  string `toml:"level" json:"level"`   // debug, info, warn, error (logrus names accepted)
	Output string `toml:"output" json:"output"` // stdout, stderr or a file path
	Format string `toml:"format" json:"format"` // text or json
}

// Api is the [api] section: the REST API.
type Api struct {
	Enabled   bool          `toml:"enabled" json:"enabled"`
	Bind      string        `toml:"bind" json:"bind"`
	Cors      bool          `toml:"cors" json:"cors"`
	BasicAuth *ApiBasicAuth `toml:"basic_auth" json:"basic_auth"`
	Tls       *ApiTls       `toml:"tls" json:"tls"`
}

// ApiBasicAuth is one HTTP Basic account that protects every route but /ping.
type ApiBasicAuth struct {
	Login    string `toml:"login" json:"login"`
	Password string `toml:"password" json:"password"`
}

// ApiTls serves the API over HTTPS.
type ApiTls struct {
	CertPath string `toml:"cert_path" json:"cert_path"`
	KeyPath  string `toml:"key_path" json:"key_path"`
}

// Metrics is the [metrics] section: Prometheus exposition.
type Metrics struct {
	Enabled bool   `toml:"enabled" json:"enabled"`
	Bind    string `toml:"bind" json:"bind"`
}

// Profiler is the [profiler] section: net/http/pprof.
type Profiler struct {
	Enabled bool   `toml:"enabled" json:"enabled"`
	Bind    string `toml:"bind" json:"bind"`
}

// Acme is the [acme] section (ACME http-01 certificates).
type Acme struct {
	Challenge string `toml:"challenge" json:"challenge"`
	HttpBind  string `toml:"http_bind" json:"http_bind"`
	CacheDir  string `toml:"cache_dir" json:"cache_dir"`
	// DirectoryURL (new) is the ACME directory of the CA; 0.8 always used
	// Let's Encrypt's production directory, the default.
	DirectoryURL string `toml:"directory_url" json:"directory_url"`
}

// Cluster is the [cluster] section. Absent means a single node.
type Cluster struct {
	NodeID          string   `toml:"node_id" json:"node_id"`
	DataDir         string   `toml:"data_dir" json:"data_dir"`
	Bind            string   `toml:"bind" json:"bind"`
	RaftBind        string   `toml:"raft_bind" json:"raft_bind"`
	Advertise       string   `toml:"advertise" json:"advertise"`
	Join            []string `toml:"join" json:"join"`
	BootstrapExpect int      `toml:"bootstrap_expect" json:"bootstrap_expect"`
	EncryptKey      string   `toml:"encrypt_key" json:"encrypt_key"`
	ServersHost     string   `toml:"servers_host" json:"servers_host"`
	MaxVoters       int      `toml:"max_voters" json:"max_voters"`
	// ReportInterval is how often this node gossips what it observes of every
	// backend (health verdict, connections, bytes per second); a health flip or
	// a change on a backend with max_connections goes out at once.
	ReportInterval Duration    `toml:"report_interval" json:"report_interval"`
	Tls            *ClusterTls `toml:"tls" json:"tls"`
}

// ClusterTls is mutual TLS for Raft and forwarded writes.
type ClusterTls struct {
	CertPath string `toml:"cert_path" json:"cert_path"`
	KeyPath  string `toml:"key_path" json:"key_path"`
	CaPath   string `toml:"ca_path" json:"ca_path"`
}

// ConnectionOptions are the per-server connection settings that [defaults] may
// provide. A nil field is unset; after defaults are applied every field is set.
type ConnectionOptions struct {
	MaxConnections           *int      `toml:"max_connections" json:"max_connections"`
	ClientIdleTimeout        *Duration `toml:"client_idle_timeout" json:"client_idle_timeout"`
	BackendIdleTimeout       *Duration `toml:"backend_idle_timeout" json:"backend_idle_timeout"`
	BackendConnectionTimeout *Duration `toml:"backend_connection_timeout" json:"backend_connection_timeout"`
	// DrainTimeout (new) bounds how long open connections of a removed server, or of
	// every server at shutdown, may live before they are closed.
	DrainTimeout *Duration `toml:"drain_timeout" json:"drain_timeout"`
}

// Server is one [servers.<name>] section.
type Server struct {
	ConnectionOptions

	Bind          string         `toml:"bind" json:"bind"`
	Protocol      string         `toml:"protocol" json:"protocol"`
	Balance       string         `toml:"balance" json:"balance"`
	Sni           *Sni           `toml:"sni" json:"sni"`
	Tls           *Tls           `toml:"tls" json:"tls"`
	BackendsTls   *BackendsTls   `toml:"backends_tls" json:"backends_tls"`
	Udp           *Udp           `toml:"udp" json:"udp"`
	Access        *Access        `toml:"access" json:"access"`
	ProxyProtocol *ProxyProtocol `toml:"proxy_protocol" json:"proxy_protocol"`
	// AcceptProxyProtocol (new): every client connection starts with a PROXY
	// protocol header (v1 or v2) from a balancer in front; its source address is
	// the client for access rules, balancing and logs.
	AcceptProxyProtocol *AcceptProxyProtocol `toml:"accept_proxy_protocol" json:"accept_proxy_protocol"`
	Discovery           *Discovery           `toml:"discovery" json:"discovery"`
	Healthcheck         *Healthcheck         `toml:"healthcheck" json:"healthcheck"`
}

// Sni is the [servers.X.sni] section: routing by the TLS ClientHello server name.
type Sni struct {
	ReadTimeout                Duration `toml:"read_timeout" json:"read_timeout"`
	UnexpectedHostnameStrategy string   `toml:"unexpected_hostname_strategy" json:"unexpected_hostname_strategy"` // default, reject, any
	HostnameMatchingStrategy   string   `toml:"hostname_matching_strategy" json:"hostname_matching_strategy"`     // exact, regexp
}

// Tls is TLS termination on the listener.
type Tls struct {
	AcmeHosts      []string `toml:"acme_hosts" json:"acme_hosts"`
	CertPath       string   `toml:"cert_path" json:"cert_path"`
	KeyPath        string   `toml:"key_path" json:"key_path"`
	MinVersion     string   `toml:"min_version" json:"min_version"`
	MaxVersion     string   `toml:"max_version" json:"max_version"`
	Ciphers        []string `toml:"ciphers" json:"ciphers"`
	SessionTickets bool     `toml:"session_tickets" json:"session_tickets"`
	// HandshakeTimeout (new) bounds the client's TLS handshake, which completes
	// before a backend is picked.
	HandshakeTimeout Duration `toml:"handshake_timeout" json:"handshake_timeout"`
}

// BackendsTls is TLS from gobetween to the backends.
type BackendsTls struct {
	IgnoreVerify   bool     `toml:"ignore_verify" json:"ignore_verify"`
	RootCaCertPath *string  `toml:"root_ca_cert_path" json:"root_ca_cert_path"`
	CertPath       *string  `toml:"cert_path" json:"cert_path"`
	KeyPath        *string  `toml:"key_path" json:"key_path"`
	MinVersion     string   `toml:"min_version" json:"min_version"`
	MaxVersion     string   `toml:"max_version" json:"max_version"`
	Ciphers        []string `toml:"ciphers" json:"ciphers"`
	SessionTickets bool     `toml:"session_tickets" json:"session_tickets"`
}

// Udp holds the UDP session limits.
type Udp struct {
	MaxRequests  uint64 `toml:"max_requests" json:"max_requests"`
	MaxResponses uint64 `toml:"max_responses" json:"max_responses"`
	Transparent  bool   `toml:"transparent" json:"transparent"`
}

// Access is the allow/deny list of client addresses.
type Access struct {
	Default string   `toml:"default" json:"default"` // allow (default) or deny
	Rules   []string `toml:"rules" json:"rules"`     // "allow 10.0.0.0/8", "deny ::1", first match wins
}

// ProxyProtocol sends a PROXY protocol header to the backend after dialing.
type ProxyProtocol struct {
	Version string `toml:"version" json:"version"`
}

// AcceptProxyProtocol reads a PROXY protocol header (v1 or v2) at the start of
// every client connection.
type AcceptProxyProtocol struct {
	// Timeout bounds the wait for the whole header; a client that has not sent
	// it by then is closed.
	Timeout Duration `toml:"timeout" json:"timeout"`
	// Allow lists the addresses (IPs or CIDRs) of the balancers allowed to
	// connect and send a header; empty allows any source. A connection from
	// another address is closed before anything is read.
	Allow []string `toml:"allow" json:"allow,omitempty"`
}

// Healthcheck is the [servers.X.healthcheck] section. Keys of every kind live in
// one flat table, as in gobetween 0.8; the kind decides which are read.
type Healthcheck struct {
	Kind          string   `toml:"kind" json:"kind"` // none, ping, probe, exec
	Interval      Duration `toml:"interval" json:"interval"`
	Timeout       Duration `toml:"timeout" json:"timeout"`
	Fails         int      `toml:"fails" json:"fails"`
	Passes        int      `toml:"passes" json:"passes"`
	InitialStatus string   `toml:"initial_status" json:"initial_status"` // healthy, unhealthy
	// ClusterVerdict (new) decides, in a cluster, which nodes' verdicts put a
	// backend in the healthy set every node picks from: majority (of the live
	// nodes that check it), any, all, or local (this node's own verdict only).
	ClusterVerdict string `toml:"cluster_verdict" json:"cluster_verdict"`

	// probe
	ProbeProtocol string `toml:"probe_protocol" json:"probe_protocol,omitempty"` // tcp, udp, tls
	ProbeSend     string `toml:"probe_send" json:"probe_send,omitempty"`
	ProbeRecv     string `toml:"probe_recv" json:"probe_recv,omitempty"`
	ProbeRecvLen  int    `toml:"probe_recv_len" json:"probe_recv_len,omitempty"`
	ProbeStrategy string `toml:"probe_strategy" json:"probe_strategy,omitempty"` // starts_with, regexp

	// exec
	ExecCommand                string `toml:"exec_command" json:"exec_command,omitempty"`
	ExecExpectedPositiveOutput string `toml:"exec_expected_positive_output" json:"exec_expected_positive_output,omitempty"`
	ExecExpectedNegativeOutput string `toml:"exec_expected_negative_output" json:"exec_expected_negative_output,omitempty"`
}

// Discovery is the [servers.X.discovery] section. Keys of every kind live in one
// flat table, as in gobetween 0.8; the kind decides which are read.
type Discovery struct {
	Kind       string   `toml:"kind" json:"kind"`
	Failpolicy string   `toml:"failpolicy" json:"failpolicy"` // keeplast, setempty
	Interval   Duration `toml:"interval" json:"interval"`
	Timeout    Duration `toml:"timeout" json:"timeout"`
	// Scope (new) says where a discovery runs in a cluster: "cluster" (the
	// leader fetches, the result goes through the Raft log, every node
	// balances over the same set) or "node" (each node fetches for itself).
	// Empty means cluster in a cluster; a single node always fetches itself.
	// static lists are read by every node whatever the scope.
	Scope string `toml:"scope" json:"scope,omitempty"`

	// static
	StaticList []string `toml:"static_list" json:"static_list,omitempty"`

	// exec
	ExecCommand []string `toml:"exec_command" json:"exec_command,omitempty"`

	// json
	JsonEndpoint              string `toml:"json_endpoint" json:"json_endpoint,omitempty"`
	JsonHostPattern           string `toml:"json_host_pattern" json:"json_host_pattern,omitempty"`
	JsonPortPattern           string `toml:"json_port_pattern" json:"json_port_pattern,omitempty"`
	JsonWeightPattern         string `toml:"json_weight_pattern" json:"json_weight_pattern,omitempty"`
	JsonPriorityPattern       string `toml:"json_priority_pattern" json:"json_priority_pattern,omitempty"`
	JsonSniPattern            string `toml:"json_sni_pattern" json:"json_sni_pattern,omitempty"`
	JsonMaxConnectionsPattern string `toml:"json_max_connections_pattern" json:"json_max_connections_pattern,omitempty"`

	// plaintext
	PlaintextEndpoint     string `toml:"plaintext_endpoint" json:"plaintext_endpoint,omitempty"`
	PlaintextRegexPattern string `toml:"plaintext_regex_pattern" json:"plaintext_regex_pattern,omitempty"`

	// srv
	SrvLookupServer  string `toml:"srv_lookup_server" json:"srv_lookup_server,omitempty"`
	SrvLookupPattern string `toml:"srv_lookup_pattern" json:"srv_lookup_pattern,omitempty"`
	SrvDnsProtocol   string `toml:"srv_dns_protocol" json:"srv_dns_protocol,omitempty"`

	// consul
	ConsulHost               string `toml:"consul_host" json:"consul_host,omitempty"`
	ConsulServiceName        string `toml:"consul_service_name" json:"consul_service_name,omitempty"`
	ConsulServiceTag         string `toml:"consul_service_tag" json:"consul_service_tag,omitempty"`
	ConsulServicePassingOnly bool   `toml:"consul_service_passing_only" json:"consul_service_passing_only,omitempty"`
	ConsulDatacenter         string `toml:"consul_datacenter" json:"consul_datacenter,omitempty"`
	ConsulAuthUsername       string `toml:"consul_auth_username" json:"consul_auth_username,omitempty"`
	ConsulAuthPassword       string `toml:"consul_auth_password" json:"consul_auth_password,omitempty"`
	ConsulAclToken           string `toml:"consul_acl_token" json:"consul_acl_token,omitempty"`
	ConsulTlsEnabled         bool   `toml:"consul_tls_enabled" json:"consul_tls_enabled,omitempty"`
	ConsulTlsCertPath        string `toml:"consul_tls_cert_path" json:"consul_tls_cert_path,omitempty"`
	ConsulTlsKeyPath         string `toml:"consul_tls_key_path" json:"consul_tls_key_path,omitempty"`
	ConsulTlsCacertPath      string `toml:"consul_tls_cacert_path" json:"consul_tls_cacert_path,omitempty"`

	// docker
	DockerEndpoint             string `toml:"docker_endpoint" json:"docker_endpoint,omitempty"`
	DockerContainerLabel       string `toml:"docker_container_label" json:"docker_container_label,omitempty"`
	DockerContainerPrivatePort int    `toml:"docker_container_private_port" json:"docker_container_private_port,omitempty"`
	DockerContainerHostEnvVar  string `toml:"docker_container_host_env_var" json:"docker_container_host_env_var,omitempty"`
	DockerTlsEnabled           bool   `toml:"docker_tls_enabled" json:"docker_tls_enabled,omitempty"`
	DockerTlsCertPath          string `toml:"docker_tls_cert_path" json:"docker_tls_cert_path,omitempty"`
	DockerTlsKeyPath           string `toml:"docker_tls_key_path" json:"docker_tls_key_path,omitempty"`
	DockerTlsCacertPath        string `toml:"docker_tls_cacert_path" json:"docker_tls_cacert_path,omitempty"`

	// lxd
	LxdServerAddress         string `toml:"lxd_server_address" json:"lxd_server_address,omitempty"`
	LxdServerRemoteName      string `toml:"lxd_server_remote_name" json:"lxd_server_remote_name,omitempty"`
	LxdServerRemotePassword  string `toml:"lxd_server_remote_password" json:"lxd_server_remote_password,omitempty"`
	LxdConfigDirectory       string `toml:"lxd_config_directory" json:"lxd_config_directory,omitempty"`
	LxdGenerateClientCerts   bool   `toml:"lxd_generate_client_certs" json:"lxd_generate_client_certs,omitempty"`
	LxdAcceptServerCert      bool   `toml:"lxd_accept_server_cert" json:"lxd_accept_server_cert,omitempty"`
	LxdContainerLabelKey     string `toml:"lxd_container_label_key" json:"lxd_container_label_key,omitempty"`
	LxdContainerLabelValue   string `toml:"lxd_container_label_value" json:"lxd_container_label_value,omitempty"`
	LxdContainerPort         int    `toml:"lxd_container_port" json:"lxd_container_port,omitempty"`
	LxdContainerPortKey      string `toml:"lxd_container_port_key" json:"lxd_container_port_key,omitempty"`
	LxdContainerInterface    string `toml:"lxd_container_interface" json:"lxd_container_interface,omitempty"`
	LxdContainerInterfaceKey string `toml:"lxd_container_interface_key" json:"lxd_container_interface_key,omitempty"`
	LxdContainerSniKey       string `toml:"lxd_container_sni_key" json:"lxd_container_sni_key,omitempty"`
	LxdContainerAddressType  string `toml:"lxd_container_address_type" json:"lxd_container_address_type,omitempty"`
}
