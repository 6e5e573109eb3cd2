//! Compiles the fast path's BPF programs (`bpf/fastpath.bpf.c`) with clang into
//! `$OUT_DIR/fastpath.bpf.o`, which `src/fastprog.rs` embeds. Needs Debian's `clang` and, for
//! `bpf/bpf_helpers.h`, `libbpf-dev` (both installed by scripts/setup.sh); `$CLANG` names another
//! clang.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/fastpath.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));
    let object = out.join("fastpath.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // The object's byte order is the target's (the programs and the agent share the maps'
    // integers); `-target bpf` would take the build machine's.
    let target = match std::env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb",
        _ => "bpfel",
    };
    // `linux/bpf.h` includes `asm/types.h`, which Debian keeps under the multiarch directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", target, "-Wall", "-Werror", "-I", &multiarch, "-c", SOURCE, "-o"])
        .arg(&object)
        .output();
    let output = match result {
        Ok(o) => o,
        Err(e) => fail(&format!(
            "cannot run `{clang}` ({e}): the fast path's BPF programs are compiled with clang; \
             install Debian's `clang` and `libbpf-dev` packages (scripts/setup.sh does), or set CLANG"
        )),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("bpf/bpf_helpers.h") {
            "\nbpf/bpf_helpers.h is missing: install Debian's `libbpf-dev` package (scripts/setup.sh does)"
        } else if stderr.contains("asm/types.h") || stderr.contains("linux/bpf.h") {
            "\nthe kernel's headers are missing: install Debian's `linux-libc-dev` package (scripts/setup.sh does)"
        } else {
            ""
        };
        fail(&format!("`{clang}` failed to compile {SOURCE} ({}):\n{stderr}{hint}", output.status));
    }
}

/// Stops the build with `msg` shown as cargo's error.
fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(1);
}
