//! `romana`: the command line. Parses arguments, finds romanad, and hands each command to its module.

mod bird_status;
mod chaos;
mod chaos_check;
mod chaos_observe;
mod chaos_plan;
mod chaos_plane;
mod chaos_probe;
mod chaos_procs;
mod check;
mod commands;
mod config;
mod doctor;
mod doctor_certs;
mod doctor_checks;
mod fabric;
mod output;
mod plan;
mod sandbox;
mod sandbox_bgp;
mod sandbox_internet;
mod sandbox_ipv6;
mod sandbox_layout;
mod sandbox_probe;
mod sandbox_reach;
mod sandbox_static;
mod text_table;
mod vip;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use romana_client::{Client, ClientError};

#[derive(Parser, Debug)]
#[command(name = "romana", version, about = "Romana: cloud-native networking without overlays")]
struct Cli {
    /// romanad URL(s), comma separated or the flag repeated [default: config file, else
    /// http://127.0.0.1:9600]
    #[arg(short = 'e', long, global = true, env = "ROMANA_ENDPOINT")]
    endpoint: Vec<String>,
    /// Config file (YAML: `endpoint: http://...`) [default: ~/.romana.yaml, /etc/romana/cli.yaml]
    #[arg(short = 'c', long, global = true, env = "ROMANA_CONFIG")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, env = "ROMANA_OUTPUT")]
    output: Option<Format>,
    /// A bearer token (default: log in with the options below).
    #[arg(long, global = true, env = "ROMANA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Log in as this user (with --password) instead of the credentials file's.
    #[arg(short = 'u', long, global = true, env = "ROMANA_USERNAME")]
    username: Option<String>,
    /// The password of --username.
    #[arg(long, global = true, env = "ROMANA_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Credentials file written by romanad [default: /var/lib/romana/admin.credentials, if readable]
    #[arg(long, global = true, env = "ROMANA_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// CA certificate (PEM) to trust for an https endpoint.
    #[arg(long, global = true, env = "ROMANA_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Log in and keep a refresh token in the config file (~/.romana.yaml).
    Login,
    /// Who the current credentials belong to.
    Whoami,
    /// Services and their live instances (from Root).
    Services,
    /// Consistency check: IPAM, endpoints (pods, VMs) and liveness; exit 1 when they disagree.
    Check {
        /// Report addresses without endpoint after SECS (default: romanad's --leak-grace).
        #[arg(long, value_name = "SECS")]
        leak_grace: Option<u64>,
    },
    /// Chaos: a seeded run of CNI, label and policy churn while agents, romanad replicas and etcd
    /// members are killed (kill -9) and restarted; then the invariants. Exit 1 on any violation.
    ///
    /// Starts its own control plane (3 etcd members, 3 romanad replicas on 127.0.0.1) unless
    /// --given, and its own sandbox. Needs root, iproute2, nftables, iputils-ping and etcd.
    Chaos(chaos::Options),
    /// Check one host: forwarding, routes, gateway, nftables, agent, BIRD, clock, credentials, certificates.
    Doctor(DoctorArgs),
    /// Address pools.
    Network {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// The topology: show it, apply a file (a merge), or see what a file would change.
    Topology {
        #[command(subcommand)]
        command: TopologyCommand,
    },
    /// Simulated hosts as network namespaces on this machine, with real agents and CNI calls.
    ///
    /// `up` builds racks of hosts behind rack routers and a spine and starts an agent per host;
    /// `pod add` places a pod through romana-cni; `status` shows hosts, route table sizes and pods;
    /// `probe` prints the reachability matrix; `down` removes everything, also after a crash.
    /// Needs root, iproute2 and iputils-ping, and a romanad this sandbox may own (up applies its
    /// topology).
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Users (admin only): agents run as a `service` user with a credentials file of their own.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Hosts (nodes, hypervisors).
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Tenants (OpenStack projects, Kubernetes namespaces).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Segments of a tenant.
    Segment {
        #[command(subcommand)]
        command: SegmentCommand,
    },
    /// Endpoint addresses.
    Address {
        #[command(subcommand)]
        command: AddressCommand,
    },
    /// Blocks of addresses and who owns them.
    Block {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Ranges nobody may be given.
    Blackout {
        #[command(subcommand)]
        command: BlackoutCommand,
    },
    /// Endpoints (pods, VMs) as policies see them.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Romana policies and Kubernetes NetworkPolicies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// VIPs: external addresses for a service's endpoints, with failover (docs/vips.md).
    Vip {
        #[command(subcommand)]
        command: VipCommand,
    },
    /// The routes a host installs (the route manager's answer).
    Routes {
        host: String,
        #[command(flatten)]
        watch: Watch,
    },
    /// The routed fabric over BGP: BIRD configuration rendered from the fabric view.
    Fabric {
        #[command(subcommand)]
        command: FabricCommand,
    },
    /// Address management without a running romanad.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
    /// A shell completion script: `source <(romana completion bash)`, or save it where your shell
    /// loads completions (docs/operations.md).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `--watch` of the list commands whose content changes.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Watch {
    /// Keep running and print the list again on every change (romanad's watch; every 2 s for
    /// users who may not watch). Ctrl-C ends it.
    #[arg(short = 'w', long)]
    watch: bool,
}

#[derive(Subcommand, Debug)]
enum FabricCommand {
    /// A router's BIRD configuration for a prefix group (path such as /rack-1, or / for the
    /// spines): sessions with its members and parents, filters, aggregates (docs/fabric.md).
    BirdConfig {
        group: String,
        /// Which of the group's routers, when it has several (the spines).
        #[arg(long)]
        router: Option<std::net::IpAddr>,
        /// BFD on every session.
        #[arg(long)]
        bfd: bool,
    },
    /// A host's BIRD include file, as its agent renders it.
    BirdHost {
        host: String,
        #[arg(long)]
        bfd: bool,
        /// Export what the fabric sends into the kernel (hosts without a default route).
        #[arg(long)]
        kernel: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ListOnly {
    /// List them.
    List,
}

#[derive(Subcommand, Debug)]
enum TopologyCommand {
    /// Networks, prefix groups and their hosts, as romanad holds them.
    Show,
    /// Apply a topology file (JSON or YAML); existing hosts and addresses are kept.
    Apply {
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Networks and groups a file would add (+) or remove (-); exits 1 if anything changes.
    Diff {
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum HostCommand {
    /// Hosts with their address, tags and liveness.
    List {
        #[command(flatten)]
        watch: Watch,
    },
    /// Register a host (its agent does this with --host-ip).
    Add {
        name: String,
        ip: String,
        /// The host's IPv6 underlay address beside its IPv4 IP (dual-stack underlay): other
        /// hosts' IPv6 routes to its blocks lead there.
        #[arg(long)]
        ipv6: Option<String>,
        #[arg(long)]
        agent_port: Option<u16>,
        /// KEY=VALUE, repeatable; matched against group assignments.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// One host.
    Show { name: String },
    /// Remove a host, releasing its addresses.
    Remove { name: String },
    /// Replace a host's tags (KEY=VALUE ...).
    Tags { name: String, tags: Vec<String> },
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// Tenants with their isolation.
    List,
    /// Create a tenant.
    Create {
        name: String,
        #[arg(short = 'i', long, default_value = "")]
        external_id: String,
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Default isolation: none (Kubernetes behaviour), tenant, or segment.
        #[arg(long, default_value = "none")]
        isolation: String,
    },
    /// One tenant with its segments.
    Show { name: String },
    /// Delete a tenant.
    Delete { name: String },
    /// Set a tenant's default isolation: none, tenant (ingress only from the tenant and the
    /// endpoint's host) or segment (only from the same tenant and segment, and the host).
    Isolate { name: String, mode: String },
}

#[derive(Subcommand, Debug)]
enum EndpointCommand {
    /// Endpoints with their address, tenant, segment, host and labels.
    List {
        #[command(flatten)]
        watch: Watch,
    },
    /// Replace an endpoint's labels (KEY=VALUE ...), as a Kubernetes controller does.
    Label { name: String, labels: Vec<String> },
}

#[derive(Subcommand, Debug)]
enum SegmentCommand {
    /// A tenant's segments.
    List { tenant: String },
    /// Add a segment to a tenant.
    Add {
        tenant: String,
        name: String,
        #[arg(short = 'i', long, default_value = "")]
        external_id: String,
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove a segment from a tenant.
    Remove { tenant: String, name: String },
}

#[derive(Subcommand, Debug)]
enum AddressCommand {
    /// Allocated addresses, of one host or tenant if given.
    List {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Allocate an address (idempotent by name).
    Allocate {
        name: String,
        #[arg(long)]
        host: String,
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        segment: String,
        /// Pin this exact address.
        #[arg(long)]
        ip: Option<String>,
        /// Makes a retried request idempotent even under another name.
        #[arg(long)]
        request_token: Option<String>,
    },
    /// Show an allocation by name or address.
    Show { key: String },
    /// Release an address by name or address.
    Release { key: String },
}

#[derive(Subcommand, Debug)]
enum VipCommand {
    /// VIPs, with the host serving each and its standby.
    List,
    /// Add a VIP: ADDR, or the lowest free address of the external ranges when omitted.
    Add {
        address: Option<String>,
        /// The service's name; its endpoints are the tenant's with label app=NAME unless
        /// --selector says otherwise.
        #[arg(long)]
        service: String,
        #[arg(long)]
        tenant: String,
        /// The preferred host (it serves the VIP whenever it is alive and has endpoints).
        #[arg(long)]
        host: Option<String>,
        /// KEY=VALUE labels selecting the endpoints (repeatable).
        #[arg(long = "selector", value_parser = vip::parse_label)]
        selector: Vec<(String, String)>,
        /// PROTO:PORT[:TARGET] forwarded ports (repeatable); none forwards every port.
        #[arg(long = "port", value_parser = vip::parse_port)]
        ports: Vec<romana_api::vip::VipPort>,
    },
    /// Delete a VIP: its hosts drop the address, the announcement and the DNAT rules.
    Delete { address: String },
    /// Set the external ranges VIPs are drawn from (admin).
    Ranges { ranges: Vec<String> },
}

#[derive(Subcommand, Debug)]
enum BlackoutCommand {
    /// Blacked-out ranges.
    List,
    /// Black out a range: nobody is given an address in it.
    Add { cidr: String },
    /// Make a blacked-out range allocatable again.
    Remove { cidr: String },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Romana policies.
    List,
    /// Add policies from a file (or - for stdin): one policy, a list, or {"securitypolicies": [...]}.
    Add { file: PathBuf },
    /// One Romana policy.
    Show { id: String },
    /// Remove a Romana policy.
    Remove { id: String },
    /// Create or replace policies from YAML (several documents allowed) or JSON: Kubernetes
    /// NetworkPolicies (also in a List), or Romana policies. Every problem of a refused policy is
    /// listed; the others still apply.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Kubernetes NetworkPolicies.
    K8sList,
    /// Delete a Kubernetes NetworkPolicy.
    K8sDelete { namespace: String, name: String },
}

#[derive(Subcommand, Debug)]
enum IpamCommand {
    /// Carve a topology file and show its groups, blocks, per-host routes and fabric announcements.
    ///
    /// With --hosts-per-group and --endpoints-per-host, simulated hosts join every group (tagged to
    /// match its assignment) and endpoints are allocated, so the route aggregation can be seen.
    Plan {
        /// Topology file (Romana 2.0 topology JSON).
        file: PathBuf,
        /// Simulated hosts to add to every (non-padding) leaf group.
        #[arg(long, default_value_t = 0)]
        hosts_per_group: usize,
        /// Endpoints to allocate on every host.
        #[arg(long, default_value_t = 0)]
        endpoints_per_host: usize,
        /// Tenants the simulated endpoints belong to, round robin.
        #[arg(long, value_delimiter = ',', default_value = "default")]
        tenants: Vec<String>,
        /// Rows to show per table before summarising.
        #[arg(long, default_value_t = 40)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user. Without --password one is generated; with --credentials-out it goes into a
    /// credentials file (mode 0600) for `romana-agent --credentials` and is never printed.
    Create {
        name: String,
        /// admin, service or tenant (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Tenants a tenant user may see (repeatable).
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// Hosts a service user acts for (repeatable): it becomes that host's agent, which may
        /// change only its own host's liveness, tags, addresses and endpoints.
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long, env = "ROMANA_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        credentials_out: Option<PathBuf>,
    },
    /// Delete a user (its password stops working; a user that is not there is no error).
    Delete { name: String },
}

/// `romana doctor`'s arguments (docs/operations.md, "romana doctor"); exit 1 when anything is wrong.
#[derive(clap::Args, Debug)]
struct DoctorArgs {
    /// The host [default: this machine's host name].
    host: Option<String>,
    /// A host of this sandbox (its namespace, agent socket and BIRD from the sandbox's state).
    #[arg(long, value_name = "NAME")]
    sandbox: Option<String>,
    /// Where sandboxes keep their state.
    #[arg(long, default_value = "/run/romana/sandbox")]
    state_dir: PathBuf,
    /// The agent's local socket (not in a sandbox).
    #[arg(long, default_value = "/run/romana/agent.sock")]
    socket: PathBuf,
    /// The agent's credentials file, whose login is checked (not in a sandbox).
    #[arg(long, default_value = "/var/lib/romana/agent.credentials")]
    agent_credentials: PathBuf,
    /// BIRD's control socket, where the host announces over BGP (not in a sandbox).
    #[arg(long)]
    bird_socket: Option<PathBuf>,
    /// The agent runs with --no-policy (no nftables table expected).
    #[arg(long)]
    no_policy: bool,
    /// A certificate file (PEM) whose expiry is checked: warned under 30 days, an error once
    /// expired (repeatable) [default: /etc/romana/tls/ca.pem and server.pem where they exist;
    /// the CA in the agent's credentials is always checked].
    #[arg(long = "cert", value_name = "FILE")]
    certs: Vec<PathBuf>,
}

impl DoctorArgs {
    fn place(&self) -> anyhow::Result<doctor::Where> {
        let host = match &self.host {
            Some(h) => h.clone(),
            None if self.sandbox.is_some() => anyhow::bail!("romana doctor --sandbox needs the HOST"),
            None => doctor::this_host()?,
        };
        if let Some(name) = &self.sandbox {
            let w = doctor::in_sandbox(&self.state_dir, name, &host)?;
            return Ok(doctor::Where { certs: self.certs.clone(), ..w });
        }
        // The systemd install's files (docs/systemd.md), where this machine has them.
        let installed = ["/etc/romana/tls/ca.pem", "/etc/romana/tls/server.pem"].map(PathBuf::from);
        let certs = if self.certs.is_empty() {
            installed.into_iter().filter(|p| p.exists()).collect()
        } else {
            self.certs.clone()
        };
        Ok(doctor::Where {
            host,
            netns: None,
            socket: self.socket.clone(),
            credentials: self.agent_credentials.clone(),
            bird_socket: self.bird_socket.clone(),
            policy: !self.no_policy,
            certs,
        })
    }
}

#[derive(clap::Args, Debug)]
struct SandboxWhere {
    /// The sandbox's name (1 to 8 of a-z 0-9); its namespaces are `rms-<name>-*`.
    #[arg(long, default_value = "sb")]
    name: String,
    /// Where sandboxes keep their state, agent sockets and logs.
    #[arg(long, default_value = "/run/romana/sandbox")]
    state_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum SandboxCommand {
    /// Build the sandbox: namespaces, links, routers, hosts registered, one agent per host.
    Up {
        #[command(flatten)]
        at: SandboxWhere,
        #[arg(long, default_value_t = 2)]
        racks: usize,
        #[arg(long, default_value_t = 2)]
        hosts_per_rack: usize,
        /// The pod address pool.
        #[arg(long, default_value = "10.112.0.0/16")]
        cidr: String,
        #[arg(long, default_value_t = 28)]
        block_mask: u8,
        /// How routers learn pod routes: static routes from the CLI, or BGP through BIRD
        /// everywhere (two spines, ECMP, BFD; docs/fabric.md).
        #[arg(long, value_enum, default_value = "static")]
        routing: sandbox_layout::Routing,
        /// Add an "internet" namespace (198.18.0.1, an echo server on port 7) behind the
        /// spines, to see egress NAT (`romana sandbox reach --internet`).
        #[arg(long)]
        internet: bool,
        /// Start with the sandbox network's `nat_outgoing` off.
        #[arg(long)]
        no_nat_outgoing: bool,
        /// With BGP: the first N hosts of each rack are its route reflectors (iBGP in the rack;
        /// the other hosts and the rack router peer with them only).
        #[arg(long, default_value_t = 0)]
        reflectors: usize,
        /// Dual stack: an IPv6 pod network (e.g. fd00:10::/64) beside the IPv4 one, an IPv6
        /// underlay of ULAs inside the sandbox; pods get one address of each family.
        #[arg(long, value_name = "CIDR")]
        ipv6: Option<String>,
    },
    /// From a pod, ask an echo server in the "internet" or in another pod which source address
    /// it sees (TCP, or UDP); a pod of a dual-stack sandbox over both families unless one is
    /// asked for; exit status 1 when one does not answer.
    Reach {
        #[command(flatten)]
        at: SandboxWhere,
        /// The pod that connects.
        #[arg(long)]
        from: String,
        /// To the "internet" (`up --internet`).
        #[arg(long, conflicts_with = "to_pod", required_unless_present = "to_pod")]
        internet: bool,
        /// To this pod, by name or by one of its addresses (which picks the family); an echo
        /// server runs there for the probe.
        #[arg(long, value_name = "POD|ADDRESS")]
        to_pod: Option<String>,
        #[arg(long)]
        udp: bool,
        /// Only this family [default: both in a dual-stack sandbox, IPv4 to the internet].
        #[arg(long, value_enum)]
        family: Option<sandbox_reach::Family>,
    },
    /// Turn the sandbox network's egress NAT (`nat_outgoing`) on or off, by a topology update.
    Nat {
        #[command(flatten)]
        at: SandboxWhere,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Destinations reached without NAT (the topology's `no_nat`; replaces the list).
        #[arg(long = "no-nat")]
        no_nat: Vec<String>,
    },
    /// The echo server `reach` asks (runs inside a namespace).
    #[command(hide = true)]
    ServeEcho {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// The echo client `reach` runs inside a pod; prints the address the server saw.
    #[command(hide = true)]
    AskEcho {
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long)]
        udp: bool,
    },
    /// With static routing: keep the routers' routes on the fabric view (`up` starts it).
    #[command(hide = true)]
    FollowRouters {
        #[command(flatten)]
        at: SandboxWhere,
    },
    /// Simulate a host's death: its link down, its agent and BIRD killed.
    KillHost {
        #[command(flatten)]
        at: SandboxWhere,
        host: String,
    },
    /// Bring a killed host back: link up, BIRD and agent started again.
    ReviveHost {
        #[command(flatten)]
        at: SandboxWhere,
        host: String,
    },
    /// Hosts (agent up or down, route table size against endpoints) and pods.
    Status {
        #[command(flatten)]
        at: SandboxWhere,
    },
    /// Ping every pod from every pod and print the matrix (and the IPv6 one in a dual-stack
    /// sandbox); exit status 1 when a pair fails.
    Probe {
        #[command(flatten)]
        at: SandboxWhere,
    },
    /// Pods of the sandbox.
    Pod {
        #[command(subcommand)]
        command: SandboxPodCommand,
    },
    /// Stop the agents and delete every namespace of the sandbox (found by name).
    Down {
        #[command(flatten)]
        at: SandboxWhere,
    },
}

#[derive(Subcommand, Debug)]
enum SandboxPodCommand {
    /// Place a pod on a host through romana-cni (ADD) and print its address.
    Add {
        #[command(flatten)]
        at: SandboxWhere,
        #[arg(long)]
        host: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "")]
        segment: String,
        /// Pod labels (key=value), kept for policies.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The pod's name [default: p<n>].
        #[arg(long)]
        pod: Option<String>,
        /// The pod's Kubernetes uid, passed as K8S_POD_UID (as kubelet does).
        #[arg(long)]
        uid: Option<String>,
        /// Labels, ports and segment come from the pod's record, which romana-k8s writes from
        /// the Pod object (ADD waits for it): no ROMANA_LABELS, no ROMANA_SEGMENT, as kubelet.
        #[arg(long, conflicts_with_all = ["labels", "segment"])]
        from_kubernetes: bool,
    },
}

async fn run_sandbox(cli: &Cli, file: &config::FileConfig, command: &SandboxCommand) -> anyhow::Result<bool> {
    if let SandboxCommand::Probe { at } = command {
        return Ok(sandbox_probe::probe(&at.state_dir, &at.name)? == 0);
    }
    if let SandboxCommand::ServeEcho { listen, log } = command {
        sandbox_internet::serve(*listen, log.clone())?;
        return Ok(true);
    }
    if let SandboxCommand::AskEcho { to, udp } = command {
        let seen = sandbox_internet::ask(*to, *udp, std::time::Duration::from_secs(3))?;
        if let Some(s) = &seen {
            println!("{s}");
        }
        return Ok(seen.is_some());
    }
    if let SandboxCommand::Reach { at, from, internet: _, to_pod, udp, family } = command {
        let to = match to_pod {
            Some(p) => sandbox_reach::Target::Pod(p.clone()),
            None => sandbox_reach::Target::Internet,
        };
        return sandbox_reach::reach(&at.state_dir, &at.name, from, &to, *udp, *family);
    }
    if let SandboxCommand::KillHost { at, host } = command {
        sandbox::kill_host(&at.state_dir, &at.name, host)?;
        return Ok(true);
    }
    if let SandboxCommand::ReviveHost { at, host } = command {
        sandbox::revive_host(&at.state_dir, &at.name, host)?;
        return Ok(true);
    }
    if let SandboxCommand::Down { at } = command {
        // Works without romanad: removing the hosts from it is best effort.
        let c = connect(cli, file).await.ok();
        sandbox_internet::stop_echoes(&at.state_dir, &at.name);
        sandbox::down(&at.state_dir, &at.name, c.as_ref()).await?;
        return Ok(true);
    }
    let c = connect(cli, file).await?;
    match command {
        SandboxCommand::Up {
            at,
            racks,
            hosts_per_rack,
            cidr,
            block_mask,
            routing,
            internet,
            no_nat_outgoing,
            reflectors,
            ipv6,
        } => {
            let o = sandbox::UpOptions {
                name: at.name.clone(),
                racks: *racks,
                hosts_per_rack: *hosts_per_rack,
                cidr: cidr.clone(),
                block_mask: *block_mask,
                state_dir: at.state_dir.clone(),
                routing: *routing,
                egress: sandbox_layout::Egress {
                    internet: *internet,
                    nat_outgoing: !*no_nat_outgoing,
                    no_nat: vec![],
                },
                reflectors: *reflectors,
                ipv6: ipv6.clone(),
                follower_env: follower_env(cli),
            };
            sandbox::up(&c, &o).await?;
            if *internet && let Err(e) = sandbox_internet::start_internet(&at.state_dir, &at.name) {
                sandbox_internet::stop_echoes(&at.state_dir, &at.name);
                let _ = sandbox::down(&at.state_dir, &at.name, Some(&c)).await;
                return Err(e.context("sandbox up failed; everything it made was removed"));
            }
        }
        SandboxCommand::Status { at } => sandbox::status(&c, &at.state_dir, &at.name).await?,
        SandboxCommand::Nat { at, state, no_nat } => {
            sandbox_internet::set_nat(&c, &at.state_dir, &at.name, state == "on", no_nat).await?
        }
        SandboxCommand::Pod {
            command: SandboxPodCommand::Add { at, host, tenant, segment, labels, pod, uid, from_kubernetes },
        } => {
            let o = sandbox::PodOptions {
                name: at.name.clone(),
                host: host.clone(),
                tenant: tenant.clone(),
                segment: segment.clone(),
                labels: commands::parse_kv(labels)?,
                pod: pod.clone(),
                uid: uid.clone(),
                from_kubernetes: *from_kubernetes,
                state_dir: at.state_dir.clone(),
            };
            sandbox::pod_add(&c, &o).await?;
        }
        SandboxCommand::FollowRouters { at } => {
            let layout = sandbox::load(&at.state_dir, &at.name)?.layout()?;
            sandbox_static::follow(&c, &sandbox::dir(&at.state_dir, &at.name), &layout).await?
        }
        SandboxCommand::Probe { .. }
        | SandboxCommand::Reach { .. }
        | SandboxCommand::ServeEcho { .. }
        | SandboxCommand::AskEcho { .. }
        | SandboxCommand::Down { .. }
        | SandboxCommand::KillHost { .. }
        | SandboxCommand::ReviveHost { .. } => unreachable!("handled above"),
    }
    Ok(true)
}

/// The connection settings this invocation was given, as the environment of a process it starts
/// (the sandbox's router follower): flags become the variables clap reads them from.
fn follower_env(cli: &Cli) -> Vec<(String, String)> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    [
        ("ROMANA_ENDPOINT", (!cli.endpoint.is_empty()).then(|| cli.endpoint.join(","))),
        ("ROMANA_CONFIG", path(&cli.config)),
        ("ROMANA_TOKEN", cli.token.clone()),
        ("ROMANA_USERNAME", cli.username.clone()),
        ("ROMANA_PASSWORD", cli.password.clone()),
        ("ROMANA_CREDENTIALS", path(&cli.credentials)),
        ("ROMANA_CA_FILE", path(&cli.ca_file)),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
    .collect()
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    if let Command::Completion { shell } = cli.command {
        // Into a buffer first: clap_complete panics when stdout fails, and a reader that stops
        // early (`romana completion bash | head`) is no error of ours.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "romana", &mut script);
        use std::io::Write;
        return match std::io::stdout().write_all(&script) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(true),
        };
    }
    let file = config::load(cli.config.as_deref())?;
    let format = cli.output.unwrap_or(match file.output.as_deref() {
        Some("json") => Format::Json,
        Some("yaml") => Format::Yaml,
        _ => Format::Table,
    });
    if let Command::Ipam {
        command: IpamCommand::Plan { file, hosts_per_group, endpoints_per_host, tenants, limit },
    } = cli.command
    {
        plan::run(&plan::Options { file, hosts_per_group, endpoints_per_host, tenants, limit }, format)?;
        return Ok(true);
    }
    if let Command::Sandbox { command } = &cli.command {
        return run_sandbox(&cli, &file, command).await;
    }
    if let Command::Chaos(o) = &cli.command {
        let given = if o.given { Some(connect(&cli, &file).await?) } else { None };
        return chaos::run(o, given).await;
    }
    let c = connect(&cli, &file).await?;
    if let Command::Login = cli.command {
        let (Some(user), Some(pass)) = (&cli.username, &cli.password) else {
            anyhow::bail!(
                "romana login needs --username and --password (or ROMANA_USERNAME and ROMANA_PASSWORD)"
            );
        };
        let t = c.login(user, pass).await?;
        let path = config::login_path(cli.config.as_deref())
            .ok_or_else(|| anyhow::anyhow!("no HOME; give --config"))?;
        let mut saved = config::load(Some(&path)).unwrap_or_default();
        saved.endpoint = Some(c.endpoints().join(","));
        saved.refresh_token = Some(t.refresh_token);
        if saved.ca_file.is_none() {
            saved.ca_file = cli.ca_file.clone();
        }
        write_private(&path, &serde_saphyr::to_string(&saved)?)?;
        println!("logged in as {user}; token kept in {}", path.display());
        return Ok(true);
    }
    use commands as x;
    let f = format;
    // A credentials file `user create` hands out trusts what this client trusts.
    let ca = match &cli.command {
        Command::User { command: UserCommand::Create { credentials_out: Some(_), .. } } => {
            trusted_ca(&cli, &file, load_credentials(&cli, &file)?.as_ref())?
        }
        _ => None,
    };
    // `romana check` also judges the CA this CLI trusts: (where it came from, its PEM).
    let check_ca = match &cli.command {
        Command::Check { .. } => {
            trusted_ca(&cli, &file, load_credentials(&cli, &file)?.as_ref())?.map(|pem| {
                let from = match cli.ca_file.as_ref().or(file.ca_file.as_ref()) {
                    Some(p) => p.display().to_string(),
                    None => credentials_path(&cli, &file)
                        .map_or("the credentials".into(), |p| format!("the CA of {}", p.display())),
                };
                (from, pem)
            })
        }
        _ => None,
    };
    match cli.command {
        Command::Login => unreachable!("handled above"),
        Command::Whoami => {
            let u = c.whoami().await?;
            output::show(f, &u, &["USER", "ROLES", "TENANTS", "HOSTS"], |u| {
                vec![vec![u.name.clone(), u.roles.join(","), u.tenants.join(","), u.hosts.join(",")]]
            })?
        }
        Command::Services => x::services(&c, f).await?,
        Command::Check { leak_grace } => return check::run(&c, f, leak_grace, check_ca).await,
        Command::Doctor(d) => return doctor::run(&c, f, &d.place()?).await,
        Command::Network { command: ListOnly::List } => x::networks(&c, f).await?,
        Command::Topology { command } => match command {
            TopologyCommand::Show => x::topology_show(&c, f).await?,
            TopologyCommand::Apply { file } => x::topology_apply(&c, f, &file).await?,
            TopologyCommand::Diff { file } => return Ok(!x::topology_diff(&c, &file).await?),
        },
        Command::Host { command } => match command {
            HostCommand::List { watch: Watch { watch: true } } => {
                watch::follow(&c, "ipam/hosts/", || x::host_list(&c, f)).await?
            }
            HostCommand::List { .. } => x::host_list(&c, f).await?,
            HostCommand::Add { name, ip, ipv6, agent_port, tags } => {
                x::host_add(&c, f, &name, (&ip, ipv6.as_deref()), agent_port, &tags).await?
            }
            HostCommand::Show { name } => x::host_show(&c, f, &name).await?,
            HostCommand::Remove { name } => x::host_remove(&c, f, &name).await?,
            HostCommand::Tags { name, tags } => x::host_tags(&c, f, &name, &tags).await?,
        },
        Command::Tenant { command } => match command {
            TenantCommand::List => x::tenant_list(&c, f).await?,
            TenantCommand::Create { name, external_id, labels, isolation } => {
                x::tenant_create(&c, f, &name, &external_id, &labels, &isolation).await?
            }
            TenantCommand::Show { name } => x::tenant_show(&c, f, &name).await?,
            TenantCommand::Delete { name } => x::tenant_delete(&c, &name).await?,
            TenantCommand::Isolate { name, mode } => x::tenant_isolate(&c, f, &name, &mode).await?,
        },
        Command::Endpoint { command } => match command {
            EndpointCommand::List { watch: Watch { watch: true } } => {
                watch::follow(&c, "endpoints/", || x::endpoint_list(&c, f)).await?
            }
            EndpointCommand::List { .. } => x::endpoint_list(&c, f).await?,
            EndpointCommand::Label { name, labels } => x::endpoint_label(&c, f, &name, &labels).await?,
        },
        Command::Segment { command } => match command {
            SegmentCommand::List { tenant } => x::segment_list(&c, f, &tenant).await?,
            SegmentCommand::Add { tenant, name, external_id, labels } => {
                x::segment_add(&c, f, &tenant, &name, &external_id, &labels).await?
            }
            SegmentCommand::Remove { tenant, name } => x::segment_remove(&c, &tenant, &name).await?,
        },
        Command::Address { command } => match command {
            AddressCommand::List { host, tenant } => {
                x::address_list(&c, f, host.as_deref(), tenant.as_deref()).await?
            }
            AddressCommand::Allocate { name, host, tenant, segment, ip, request_token } => {
                x::address_allocate(
                    &c,
                    f,
                    &name,
                    &host,
                    &tenant,
                    &segment,
                    ip.as_deref(),
                    request_token.as_deref(),
                )
                .await?
            }
            AddressCommand::Show { key } => x::address_show(&c, f, &key).await?,
            AddressCommand::Release { key } => x::address_release(&c, f, &key).await?,
        },
        Command::Block { command: ListOnly::List } => x::block_list(&c, f).await?,
        Command::Blackout { command } => match command {
            BlackoutCommand::List => x::blackout_list(&c, f).await?,
            BlackoutCommand::Add { cidr } => x::blackout_add(&c, &cidr).await?,
            BlackoutCommand::Remove { cidr } => x::blackout_remove(&c, &cidr).await?,
        },
        Command::Policy { command } => match command {
            PolicyCommand::List => x::policy_list(&c, f).await?,
            PolicyCommand::Add { file } => x::policy_add(&c, f, &file).await?,
            PolicyCommand::Show { id } => x::policy_show(&c, f, &id).await?,
            PolicyCommand::Remove { id } => x::policy_remove(&c, &id).await?,
            PolicyCommand::Apply { file } => x::policy_apply(&c, f, &file).await?,
            PolicyCommand::K8sList => x::netpol_list(&c, f).await?,
            PolicyCommand::K8sDelete { namespace, name } => x::netpol_delete(&c, &namespace, &name).await?,
        },
        Command::Vip { command } => match command {
            VipCommand::List => vip::list(&c, f).await?,
            VipCommand::Add { address, service, tenant, host, selector, ports } => {
                let req = romana_api::vip::VipRequest {
                    address: address.unwrap_or_default(),
                    service,
                    tenant,
                    selector: selector.into_iter().collect(),
                    ports,
                    host: host.unwrap_or_default(),
                    origin: String::new(),
                };
                vip::add(&c, f, &req).await?
            }
            VipCommand::Delete { address } => vip::delete(&c, &address).await?,
            VipCommand::Ranges { ranges } => vip::set_ranges(&c, ranges).await?,
        },
        Command::Routes { host, watch: Watch { watch: true } } => {
            watch::follow(&c, &format!("routes/{host}"), || x::routes(&c, f, &host)).await?
        }
        Command::Routes { host, .. } => x::routes(&c, f, &host).await?,
        Command::Fabric { command } => match command {
            FabricCommand::BirdConfig { group, router, bfd } => {
                let o = romana_fabric::Options { bfd, kernel: true };
                print!("{}", fabric::bird_config(&c, &group, router, o).await?)
            }
            FabricCommand::BirdHost { host, bfd, kernel } => {
                print!("{}", fabric::bird_host(&c, &host, romana_fabric::Options { bfd, kernel }).await?)
            }
        },
        Command::User {
            command: UserCommand::Create { name, roles, tenants, hosts, password, credentials_out },
        } => {
            let new = x::NewUser { name: &name, roles: &roles, tenants: &tenants, hosts: &hosts };
            let out = credentials_out.as_deref().map(|p| x::CredentialsOut { path: p, ca: ca.as_deref() });
            x::user_create(&c, f, &new, password, out).await?
        }
        Command::User { command: UserCommand::Delete { name } } => x::user_delete(&c, &name).await?,
        Command::Ipam { .. } | Command::Sandbox { .. } | Command::Chaos(_) | Command::Completion { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(true)
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    // `mode` applies only when the file is created: an existing file keeps its mode otherwise.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The credentials file in use: --credentials, the config file's, or romanad's default if it exists.
fn credentials_path(cli: &Cli, file: &config::FileConfig) -> Option<PathBuf> {
    cli.credentials.clone().or_else(|| file.credentials.clone()).or_else(|| {
        let p = PathBuf::from(config::DEFAULT_CREDENTIALS);
        std::fs::File::open(&p).is_ok().then_some(p)
    })
}

/// The credentials file chosen (--credentials, the config file's, or romanad's default), read.
fn load_credentials(
    cli: &Cli,
    file: &config::FileConfig,
) -> anyhow::Result<Option<romana_api::rest::Credentials>> {
    use anyhow::Context;
    Ok(match &credentials_path(cli, file) {
        Some(p) => Some(serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?),
        None => None,
    })
}

/// The CA this client trusts (PEM): --ca-file or the config file's, else the credentials file's.
fn trusted_ca(
    cli: &Cli,
    file: &config::FileConfig,
    creds: Option<&romana_api::rest::Credentials>,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    Ok(match cli.ca_file.as_ref().or(file.ca_file.as_ref()) {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => creds.and_then(|c| c.ca.clone()),
    })
}

/// A client for the chosen endpoint with the first credentials found: --token, a saved refresh
/// token, --username/--password, or romanad's credentials file.
async fn connect(cli: &Cli, file: &config::FileConfig) -> anyhow::Result<Client> {
    let creds = load_credentials(cli, file)?;
    let flags = (!cli.endpoint.is_empty()).then(|| cli.endpoint.join(","));
    let explicit = flags.as_deref().or(file.endpoint.as_deref());
    let endpoints = match (explicit, &creds) {
        (None, Some(c)) => romana_client::endpoint_list(&c.endpoint),
        _ => config::endpoints(explicit, file),
    };
    let source = match (&flags, &file.endpoint, &credentials_path(cli, file)) {
        (Some(e), _, _) if std::env::var("ROMANA_ENDPOINT").is_ok_and(|v| &v == e) => {
            "ROMANA_ENDPOINT".to_owned()
        }
        (Some(_), _, _) => "--endpoint".to_owned(),
        (None, Some(_), _) => "the config file".to_owned(),
        (None, None, Some(p)) => format!("the credentials file {}", p.display()),
        (None, None, None) => format!("the default ({})", config::DEFAULT_ENDPOINT),
    };
    let _ = ENDPOINT_SOURCE.set(source);
    let ca = trusted_ca(cli, file, creds.as_ref())?;
    let tls = ca.map(|ca| romana_client::Tls { ca_pem: Some(ca), ..Default::default() });
    let c = Client::with_tls(endpoints, tls.as_ref())?;
    use anyhow::Context;
    if matches!(cli.command, Command::Login) {
        return Ok(c);
    }
    if let Some(t) = &cli.token {
        c.set_token(Some(t.clone()));
    } else if let (Some(u), Some(p)) = (&cli.username, &cli.password) {
        c.login(u, p).await?;
    } else if let Some(r) = &file.refresh_token {
        c.refresh(r).await.context("the saved login has expired; run romana login again")?;
    } else if let Some(cr) = &creds {
        c.login(&cr.username, &cr.password).await?;
    }
    Ok(c)
}

/// Where the endpoint in use came from, for the unreachable-romanad message: known in `connect`,
/// needed in `main`, which prints the error of whatever call failed.
static ENDPOINT_SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// What to do when romanad cannot be reached, after the error (which names the URLs tried).
fn unreachable_hint(source: Option<&str>) -> String {
    format!(
        "romana: that endpoint came from {}. Point the CLI at romanad with --endpoint URL or \
         ROMANA_ENDPOINT=URL (several replicas: comma separated), `endpoint: URL` in ~/.romana.yaml \
         (or --config FILE), or a credentials file that names it (--credentials FILE or \
         ROMANA_CREDENTIALS; romanad writes DATA_DIR/admin.credentials). Is romanad running \
         (`romanad --listen ADDR`)?",
        source.unwrap_or("the default (http://127.0.0.1:9600)")
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("romana: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("romana: {e:#}");
            // 3: romanad unreachable; 1: anything else (the API's message says what).
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Unreachable { .. }) => {
                    eprintln!("{}", unreachable_hint(ENDPOINT_SOURCE.get().map(String::as_str)));
                    ExitCode::from(3)
                }
                Some(e) if e.status() == Some(401) => {
                    eprintln!(
                        "romana: romanad wants credentials: `romana login --username USER --password PASS` \
                         (kept in ~/.romana.yaml), --token TOKEN, or a credentials file (--credentials \
                         FILE or ROMANA_CREDENTIALS; romanad writes DATA_DIR/admin.credentials)."
                    );
                    ExitCode::FAILURE
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod help_tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod write_private_tests {
    /// F8: a file that exists with mode 0644 is 0600 after `write_private`, before it holds the secret.
    #[test]
    fn an_existing_readable_file_becomes_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("romana-cli-wp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        super::write_private(&p, "secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((mode, text.as_str()), (0o600, "secret"));
    }
}
