//! romana-cni's pure core: what the runtime asked (environment and stdin, CNI spec 0.3.0 to 1.1.0)
//! as a typed `Invocation`, and the agent's answer rendered as the result of the version the runtime
//! speaks. No I/O here; `main.rs` reads, calls the agent, and writes.

mod invocation;
mod result;

pub use invocation::{CNI_VARS, Command, Invocation, NetConf, parse, read_env};
pub use result::{CniError, panic_error, render_result, version_answer};

/// The versions whose results we can produce. 0.1.0 and 0.2.0 have another result shape and no
/// runtime we target speaks them.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Orders versions numerically ("0.10.0" after "0.4.0").
pub(crate) fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// Where the agent listens unless the network config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/romana/agent.sock";

/// The pod annotation (passed by containerd's CRI as runtimeConfig) that names the segment.
pub const SEGMENT_ANNOTATION: &str = "romana.io/segment";
