use clap::{Args, Parser, Subcommand, ValueEnum};

/// The whole network of a Kubernetes node in one binary: pod networking (CNI),
/// Service virtual IPs (nftables) and cluster DNS — in a lab of network
/// namespaces on one machine, or for a real node. Run with CNI_COMMAND set
/// (as /opt/cni/bin/strait), it is a CNI plugin.
#[derive(Debug, Parser)]
#[command(name = "strait", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the cluster state the manifests describe, after the controllers ran.
    ///
    /// A dry run of what the API server and controller manager would make of
    /// the manifests: every input object plus Pods for Deployments, allocated
    /// ClusterIPs and NodePorts, EndpointSlices and the `kubernetes` Service,
    /// as one `kind: List` sorted by kind, namespace and name.
    Render(RenderArgs),

    /// The Service proxy: Services and EndpointSlices as nftables rules.
    ///
    /// What kube-proxy does, on nftables: each Service's virtual IPs (ClusterIP,
    /// externalIPs, LoadBalancer IPs) and NodePorts are DNAT'ed to a random
    /// usable endpoint, with masquerading, session affinity and traffic policies
    /// as Kubernetes defines them. Rules live in the tables `ip strait` and (for
    /// IPv6 Services) `ip6 strait` of the current network namespace; they stay
    /// when strait exits (as kube-proxy's do) until `strait proxy --cleanup`.
    Proxy(ProxyArgs),

    /// The cluster DNS server: Service and pod names, everything else forwarded.
    ///
    /// Answers for the cluster domain as the Kubernetes DNS specification 1.1.0
    /// and CoreDNS define them (A/AAAA, SRV, PTR, headless, ExternalName, pod
    /// names), reloads when the manifests change, and forwards other names to
    /// upstream servers with a cache.
    Dns(DnsArgs),

    /// The Ingress controller: HTTP and HTTPS routes of Ingress objects.
    ///
    /// Serves the Ingresses whose IngressClass has `spec.controller:
    /// strait.dev/ingress` (or, without a class, the default IngressClass if
    /// it is strait's): hosts (exact and `*.` wildcards), paths (Exact,
    /// Prefix, ImplementationSpecific, longest first), `defaultBackend`,
    /// TLS with certificates from `kubernetes.io/tls` Secrets chosen by SNI.
    /// Requests go straight to the Service's ready endpoints over kept-alive
    /// connections; a change of the manifests is served without dropping a
    /// connection. 404: no route; 503: no ready endpoint; 502: the endpoint
    /// could not be reached.
    Ingress(IngressArgs),

    /// The node agent of a real cluster (cluster mode), fed by the Kubernetes API.
    ///
    /// What kube-proxy does on a node, as a DaemonSet pod: watches Services,
    /// EndpointSlices, Nodes, Namespaces, Pods, NetworkPolicies, Ingresses and
    /// IngressClasses, and once every kind is listed programs the node's
    /// Service rules (the tables of `strait proxy`) in this process's network
    /// namespace, then follows each change. Serves /healthz, /livez and
    /// /metrics as kube-proxy does on :10256. The rules stay when it exits
    /// and a restarted agent changes only what differs.
    Agent(AgentArgs),

    /// Explain a packet's way through the cluster, from the rules the kernel runs.
    ///
    /// Resolves the name as the cluster DNS would, then walks the Service
    /// proxy's nftables rules of the node the packet enters (as `strait
    /// proxy` would program them) hook by hook: the VIP, each endpoint with
    /// its probability, the node it lives on and the overlay hop to it,
    /// DNAT/masquerade, the reply's way back, and for a dropped or rejected
    /// packet the rule that did it.
    Trace(TraceArgs),

    /// NetworkPolicy and ClusterNetworkPolicy: what the policies of the manifests allow.
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// A whole cluster network on this machine: nodes and pods are network
    /// namespaces, containers are host processes (images are recorded, not
    /// pulled). Needs root.
    #[command(subcommand)]
    Lab(LabCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The reachability matrix: for every pair of pods, port and protocol,
    /// whether a new connection is allowed.
    ///
    /// Pods are those of the manifests that are not hostNetwork; a pod
    /// without status.podIP (a Deployment's) is given a node and an address
    /// as the lab would, and said so. Printed as cyclonus prints it: one table per
    /// protocol/port, a row per source pod, a column per destination pod,
    /// `.` allowed and `X` denied; `-o json` lists every cell.
    Matrix(PolicyMatrixArgs),
}

#[derive(Debug, Args)]
pub struct PolicyMatrixArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Destination ports to probe, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "80,81", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Protocols to probe, comma-separated: tcp, udp, sctp.
    #[arg(long, value_delimiter = ',', default_value = "tcp", value_parser = policy_protocol)]
    pub protocols: Vec<strait_policy::Protocol>,

    /// text (the tables) or json (a list of cells).
    #[arg(short, long, value_enum, default_value_t = MatrixOutput::Text)]
    pub output: MatrixOutput,

    /// How the matrix is computed: `traced` walks packets through the
    /// planned nftables rules (what the kernel would decide); `reference`
    /// reads the policies as the API reference words them.
    #[arg(long, value_enum, default_value_t = PolicyReading::Traced)]
    pub reading: PolicyReading,
}

fn policy_protocol(s: &str) -> Result<strait_policy::Protocol, String> {
    s.parse()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MatrixOutput {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyReading {
    Traced,
    Reference,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create a lab, apply the manifests, wait until every pod is Ready.
    Up(LabUpArgs),
    /// Add or change objects in a running lab.
    Apply(LabApplyArgs),
    /// Remove objects from a running lab, by file or as KIND/NAME.
    Delete(LabDeleteArgs),
    /// Show nodes, pods, services or endpointslices, like kubectl get.
    Get(LabGetArgs),
    /// Run a command inside a pod (its network, hostname and resolv.conf).
    Exec(LabExecArgs),
    /// Print a pod's container output.
    Logs(LabLogsArgs),
    /// Explain a packet's way through the lab, from the rules its nodes run.
    Trace(LabTraceArgs),
    /// NetworkPolicy in the lab: the planned truth table against real connections.
    #[command(subcommand)]
    Policy(LabPolicyCommand),
    /// Print the admin kubeconfig of the lab's API server (for kubectl).
    Kubeconfig(LabName),
    /// Remove every namespace, process and file of a lab.
    Down(LabName),
    /// (internal) The lab's controller process.
    #[command(hide = true)]
    Controller(LabName),
    /// (internal) A server for probes, run as a pod's container: accepts
    /// TCP connections and answers UDP datagrams on the given ports, each
    /// time with `namespace/pod`, so a prober knows who it reached.
    #[command(hide = true)]
    Serve(LabServeArgs),
}

#[derive(Debug, Subcommand)]
pub enum LabPolicyCommand {
    /// Probe the reachability matrix with real connections between the
    /// lab's pods, and compare it with the planned one.
    ///
    /// The planned matrix is `strait policy matrix`'s traced reading over
    /// the lab's current objects, read from its API server. Before probing,
    /// the command waits until every node's agent has applied those very
    /// objects (its /healthz names the newest it applied), so a policy just
    /// changed is what is probed. Then, from inside each source pod's
    /// network namespace, it connects to every pod's address on each port
    /// (TCP: a connection; UDP: a datagram and its answer), in parallel, a
    /// failed probe tried again; the pods must serve those ports (`strait
    /// lab serve`, hidden, does). A denied connection is a timeout.
    ///
    /// Printed: both tables (`.` allowed, `X` denied, `?` no verdict),
    /// then every cell where they differ; the command fails when any does,
    /// or when a probe had no verdict (refused: nothing serves the port).
    /// SCTP: this kernel has no SCTP sockets, so an SCTP probe is the
    /// association's first packet, an INIT sent through a raw socket from
    /// the source pod and watched for by a raw socket in the destination
    /// pod: arrived is allowed (no answer comes back). A pod's connection
    /// to its own address never leaves its network namespace, so no policy
    /// can judge it: such loopback cells are probed and shown, and a
    /// difference there is listed apart and does not fail the command
    /// (upstream's e2e ignores them too) unless --loopback compare.
    Matrix(LabPolicyMatrixArgs),
}

#[derive(Debug, Args)]
pub struct LabPolicyMatrixArgs {
    #[command(flatten)]
    pub lab: LabName,

    /// Destination ports to probe, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "80,81", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// The namespaces whose pods are probed (and shown), comma-separated.
    /// Default: every namespace but kube-system (the lab's DNS). Policies
    /// of every namespace count either way.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Protocols to probe, comma-separated: tcp, udp, sctp (sctp: by raw INITs, see above).
    #[arg(long, value_delimiter = ',', default_value = "tcp", value_parser = policy_protocol)]
    pub protocols: Vec<strait_policy::Protocol>,

    /// text (the tables and the differences) or json (`planned`, `probed`,
    /// `differences`, `loopbackDifferences`, `errors`, timings).
    #[arg(short, long, value_enum, default_value_t = MatrixOutput::Text)]
    pub output: MatrixOutput,

    /// How long one attempt waits for a connection or an answer, in milliseconds.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub probe_timeout_ms: u64,

    /// Attempts per probe: a probe that got no answer is tried again, up to
    /// this many times in all (as cyclonus does); one answer decides.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts: u32,

    /// Probes run at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,

    /// How long to wait for the nodes' agents to apply the current objects, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub sync_timeout: u64,

    /// Whether differences on loopback cells (a pod to itself) fail the command.
    #[arg(long, value_enum, default_value_t = LoopbackCells::Ignore)]
    pub loopback: LoopbackCells,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoopbackCells {
    /// Shown and listed apart; they do not fail the command.
    Ignore,
    /// Counted like every other cell.
    Compare,
}

#[derive(Debug, Args)]
pub struct LabServeArgs {
    /// TCP ports to listen on, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub tcp: Vec<u16>,
    /// UDP ports to answer on, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub udp: Vec<u16>,
}

#[derive(Debug, Args)]
pub struct LabName {
    /// Which lab: a DNS label of at most 20 characters.
    #[arg(long, default_value = "strait", value_parser = lab_name)]
    pub name: String,
}

/// Refuse a lab name before anything is done with it: it becomes a path
/// under /run/strait and part of namespace names.
fn lab_name(name: &str) -> Result<String, String> {
    strait_lab::validate_lab_name(name)
        .map(|()| name.to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct LabUpArgs {
    #[command(flatten)]
    pub lab: LabName,
    /// How many nodes.
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// How pod ranges of different nodes reach each other.
    #[arg(long, value_enum, default_value_t = LabBackend::Vxlan)]
    pub backend: LabBackend,
    /// The pod network; each node gets a /24 of it.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub pod_cidr: String,
    /// Where ClusterIPs come from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    /// How long to wait for every pod to be Ready, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Manifests to apply (file, directory or -). Repeat for more.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<String>,
    /// Read the subdirectories of -f directories too (a must-gather or
    /// cluster-info dump tree), as kubectl -R does.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LabBackend {
    Vxlan,
    HostGw,
}

#[derive(Debug, Args)]
pub struct LabApplyArgs {
    #[command(flatten)]
    pub lab: LabName,
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<String>,

    /// Read the subdirectories of -f directories too (a must-gather or
    /// cluster-info dump tree), as kubectl -R does.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct LabDeleteArgs {
    #[command(flatten)]
    pub lab: LabName,
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<String>,
    /// Read the subdirectories of -f directories too (a must-gather or
    /// cluster-info dump tree), as kubectl -R does.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// KIND/NAME, e.g. pod/web-1 or deployment/service-demo.
    pub object: Option<String>,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct LabGetArgs {
    #[command(flatten)]
    pub lab: LabName,
    /// Kinds, comma-separated: nodes, pods, services, endpointslices.
    #[arg(default_value = "pods")]
    pub kinds: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// wide, yaml or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

#[derive(Debug, Args)]
pub struct LabExecArgs {
    #[command(flatten)]
    pub lab: LabName,
    pub pod: String,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LabLogsArgs {
    #[command(flatten)]
    pub lab: LabName,
    pub pod: String,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

/// Where manifests come from; shared by every command that reads state.
#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// A manifest file, a directory (its *.yaml, *.yml and *.json files, in name
    /// order) or - for standard input. Repeat for more.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<String>,

    /// Read the subdirectories of -f directories too (a must-gather or
    /// cluster-info dump tree), as kubectl -R does.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// Cluster-wide settings of the API server and controller manager.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Range ClusterIPs come from (like kube-apiserver's --service-cluster-ip-range).
    /// Give an IPv4 and an IPv6 range for dual-stack. Default 10.96.0.0/12.
    #[arg(long = "service-cidr", value_name = "CIDR")]
    pub service_cidrs: Vec<String>,

    /// Range NodePorts come from (like --service-node-port-range).
    #[arg(long, value_name = "FIRST-LAST", default_value = "30000-32767")]
    pub node_port_range: String,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub manifests: OptionalManifestArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// The node this proxy runs on: decides which endpoints are local.
    #[arg(long, value_name = "NAME", required_unless_present = "cleanup")]
    pub node: Option<String>,

    /// The node's addresses (default: the Node object's status.addresses).
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<String>,

    /// The pod network. ClusterIP traffic from outside it is masqueraded.
    /// Give an IPv4 and an IPv6 network for dual-stack.
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    pub cluster_cidrs: Vec<String>,

    /// Where NodePorts answer: `primary` (the node's IPs, from --node-ip or
    /// the Node object) or comma-separated CIDRs; local addresses in them
    /// answer (0.0.0.0/0,::/0 for every address), as kube-proxy's flag.
    #[arg(long, value_name = "primary|CIDR,...", default_value = "primary")]
    pub nodeport_addresses: String,

    /// Print the ruleset in nft syntax instead of applying it.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove strait's rules from this network namespace and exit.
    #[arg(long, conflicts_with = "dry_run")]
    pub cleanup: bool,

    /// Where to serve /metrics (Prometheus) and /healthz.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:10249")]
    pub metrics_address: String,

    /// Ignored: manifests are followed with inotify, a change is seen when
    /// it is made. Still accepted so that existing command lines work.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 500, hide = true)]
    pub poll_ms: u64,
}

/// Manifests, optional for commands that can run without them.
#[derive(Debug, Args)]
pub struct OptionalManifestArgs {
    /// A manifest file, a directory (its *.yaml, *.yml and *.json files, in name
    /// order) or - for standard input. Repeat for more.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "cleanup"
    )]
    pub files: Vec<String>,

    /// Read the subdirectories of -f directories too (a must-gather or
    /// cluster-info dump tree), as kubectl -R does.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// A kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else the
    /// pod's service account, as kube-proxy finds its configuration).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<String>,

    /// The node this agent runs on (default: $NODE_NAME, else the hostname).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// The node's addresses (default: the Node object's status.addresses).
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<String>,

    /// The pod network; ClusterIP traffic from outside it is masqueraded.
    /// Default: the Nodes' spec.podCIDRs.
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    pub cluster_cidrs: Vec<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Where to serve /healthz, /livez and /metrics (port 0: any free port,
    /// printed at start).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: String,

    /// /healthz and /livez answer 503 once a change has waited this long
    /// without being applied (kube-proxy: twice its sync period).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub healthz_timeout: u64,

    /// Install strait as the node's CNI plugin: copy this binary to DIR/strait
    /// (as flannel's install-cni does), atomically. Needs --cni-conf-dir.
    #[arg(long, value_name = "DIR", requires = "cni_conf_dir")]
    pub cni_bin_dir: Option<String>,

    /// Write DIR/10-strait.conflist from this Node's spec.podCIDRs,
    /// atomically, once they are known. Needs --cni-bin-dir.
    #[arg(long, value_name = "DIR", requires = "cni_bin_dir")]
    pub cni_conf_dir: Option<String>,

    /// The pods' MTU in that configuration (1450: room for VXLAN's 50 bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 1450)]
    pub cni_mtu: u32,

    /// The node network: other nodes' pod ranges over VXLAN, or routed via
    /// the nodes themselves (host-gw, one L2 underlay), as flannel makes
    /// them; this node's VTEP is published in its Node's flannel
    /// annotations, so flannel's nodes and strait's reach each other.
    /// `none`: another plugin (or flannel) does it.
    #[arg(long, value_enum, default_value_t = OverlayMode::None)]
    pub overlay: OverlayMode,

    /// The VXLAN network identifier; every node must use the same one
    /// (flannel's default: 1).
    #[arg(long, value_name = "VNI", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..16_777_216))]
    pub overlay_vni: u32,

    /// The VXLAN UDP port (flannel's and Linux's default: 8472).
    #[arg(long, value_name = "PORT", default_value_t = 8472, value_parser = clap::value_parser!(u16).range(1..))]
    pub overlay_port: u16,

    /// Enforce NetworkPolicy for this node's pods: tables `ip strait-policy`
    /// and `ip6 strait-policy`, judged in the forward hook after DNAT.
    #[arg(long)]
    pub network_policy: bool,

    /// Wait for the first full list of every kind, print the ruleset the
    /// node would get (as `strait proxy --dry-run`) and exit.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove strait's rules from this network namespace and exit (with
    /// --overlay vxlan|host-gw: the overlay's device and routes too).
    #[arg(long, conflicts_with = "dry_run")]
    pub cleanup: bool,
}

/// How the agent joins the nodes' pod ranges (`--overlay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OverlayMode {
    None,
    Vxlan,
    HostGw,
}

/// Manifests for `strait dns` and `strait ingress`, which can read the API
/// instead (`--kubernetes`).
#[derive(Debug, Args)]
pub struct ApiOrManifestArgs {
    /// A manifest file, a directory (its *.yaml, *.yml and *.json files, in name
    /// order) or - for standard input. Repeat for more.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub files: Vec<String>,

    /// Read the subdirectories of -f directories too (a must-gather or
    /// cluster-info dump tree), as kubectl -R does.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct DnsArgs {
    #[command(flatten)]
    pub manifests: ApiOrManifestArgs,

    /// Read Services, EndpointSlices and Pods from the Kubernetes API
    /// (cluster mode) instead of manifests; ready after the first full list.
    #[arg(long)]
    pub kubernetes: bool,

    /// With --kubernetes: a kubeconfig file (default: $KUBECONFIG,
    /// ~/.kube/config, else the pod's service account).
    #[arg(long, value_name = "PATH", requires = "kubernetes")]
    pub kubeconfig: Option<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Where to answer, over UDP and TCP.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:53")]
    pub listen: String,

    /// The cluster domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// TTL of the cluster's records, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub ttl: u32,

    /// Upstream server for other names (IP or IP:PORT); repeat for more.
    /// Default: the nameservers of /etc/resolv.conf.
    #[arg(long = "upstream", value_name = "ADDR")]
    pub upstreams: Vec<String>,

    /// How long to wait for an upstream before SERVFAIL.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 2000)]
    pub upstream_timeout_ms: u64,

    /// Where to serve /metrics, /healthz and /ready.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9153")]
    pub metrics_address: String,

    /// Ignored: manifests are followed with inotify, a change is seen when
    /// it is made. Still accepted so that existing command lines work.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 500, hide = true)]
    pub poll_ms: u64,
}

#[derive(Debug, Args)]
pub struct IngressArgs {
    #[command(flatten)]
    pub manifests: ApiOrManifestArgs,

    /// Read IngressClasses, Ingresses, Services, EndpointSlices, TLS
    /// Secrets, Namespaces and, where the API server serves them, the
    /// Gateway API's kinds from the Kubernetes API (cluster mode) instead
    /// of manifests; nothing is served before the first full list. The
    /// status of the Gateway API objects of the classes served is written
    /// back.
    #[arg(long)]
    pub kubernetes: bool,

    /// With --kubernetes: a kubeconfig file (default: $KUBECONFIG,
    /// ~/.kube/config, else the pod's service account).
    #[arg(long, value_name = "PATH", requires = "kubernetes")]
    pub kubeconfig: Option<String>,

    /// With --kubernetes: the addresses clients reach this controller at,
    /// written to `status.loadBalancer.ingress` of every Ingress it serves
    /// and `status.addresses` of every Gateway (comma-separated or
    /// repeated; none: the Ingresses' status is left alone).
    #[arg(
        long,
        value_name = "IP",
        value_delimiter = ',',
        requires = "kubernetes"
    )]
    pub publish_status_address: Vec<std::net::IpAddr>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Where to serve HTTP.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:80")]
    pub listen: String,

    /// Where to serve HTTPS (certificates of the Ingresses' `tls`).
    #[arg(long, value_name = "IP:PORT")]
    pub tls_listen: Option<String>,

    /// The `spec.controller` of the IngressClasses to serve.
    #[arg(long, value_name = "NAME", default_value = strait_ingress::CONTROLLER)]
    pub controller: String,

    /// The `spec.controllerName` of the GatewayClasses to serve (Gateway
    /// API): their Gateways' HTTP listeners are served on --listen, their
    /// HTTPS listeners on --tls-listen (with --kubernetes, only listeners
    /// whose port is that address's port; the others are not accepted:
    /// PortUnavailable).
    #[arg(long, value_name = "NAME", default_value = strait_ingress::GATEWAY_CONTROLLER)]
    pub gateway_controller: String,

    /// Serve only these Gateways (NAMESPACE/NAME, comma-separated or
    /// repeated; default: every Gateway of the classes served). The status
    /// of the others is still planned; with --kubernetes it is written for
    /// these only (and their entries of routes' `status.parents`).
    #[arg(long, value_name = "NS/NAME", value_delimiter = ',')]
    pub gateway: Vec<String>,

    /// Worker threads, each with its own event loop (default: one per CPU
    /// this process may run on).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// How an endpoint is chosen: `round-robin`, or `least-request` (of two
    /// drawn at random, the one with fewer requests in flight).
    #[arg(long, value_name = "POLICY", default_value = "round-robin")]
    pub balance: String,

    /// Seconds from a request to its response's head before it is answered
    /// 504.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub request_timeout: u64,

    /// Print one line per request on standard output (time, client, host,
    /// method, path, status, bytes, endpoint, duration).
    #[arg(long)]
    pub access_log: bool,

    /// Serve Prometheus metrics (`/metrics`) on this address.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,
}

/// What `strait trace` and `strait lab trace` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceOutput {
    Text,
    Json,
}

/// The packet of a trace.
#[derive(Debug, Args)]
pub struct PacketArgs {
    /// Where the packet starts: NAMESPACE/POD, or an IP address (a pod's, a
    /// node's, or a client outside the cluster entering --node).
    #[arg(long, value_name = "NS/POD|IP")]
    pub from: String,

    /// Where it goes: NAME:PORT (resolved as the pod's DNS lookup would be:
    /// `web:80`, `web.default:80`, `web.default.svc.cluster.local:80`) or
    /// IP:PORT.
    #[arg(long, value_name = "NAME:PORT|IP:PORT")]
    pub to: String,

    /// tcp, udp or sctp.
    #[arg(long, default_value = "tcp")]
    pub protocol: String,

    /// text, or json for tools.
    #[arg(short, long, value_enum, default_value_t = TraceOutput::Text)]
    pub output: TraceOutput,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub manifests: ManifestArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub packet: PacketArgs,

    /// The node the packet enters (default: the node of the --from pod).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// The pod network (as `strait proxy --cluster-cidr`). Default: the
    /// Nodes' podCIDRs.
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    pub cluster_cidrs: Vec<String>,

    /// How pod ranges of different nodes reach each other.
    #[arg(long, value_enum, default_value_t = LabBackend::Vxlan)]
    pub backend: LabBackend,

    /// The cluster domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

#[derive(Debug, Args)]
pub struct LabTraceArgs {
    #[command(flatten)]
    pub lab: LabName,

    #[command(flatten)]
    pub packet: PacketArgs,

    /// The node a packet from outside enters (default: the first node).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}
