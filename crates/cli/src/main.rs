//! `romana`: the command line. Parses arguments and hands each command to its module.

mod plan;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "romana", version, about = "Romana: cloud-native networking without overlays")]
struct Cli {
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table, env = "ROMANA_OUTPUT")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Address management without a running romanad.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ipam {
            command: IpamCommand::Plan { file, hosts_per_group, endpoints_per_host, tenants, limit },
        } => plan::run(
            &plan::Options { file, hosts_per_group, endpoints_per_host, tenants, limit },
            cli.output,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("romana: {e:#}");
            ExitCode::FAILURE
        }
    }
}
