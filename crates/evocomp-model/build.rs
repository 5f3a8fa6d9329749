//! Which instruction sets the building machine has, as cfgs for the tests of
//! the kernel copies (`kernels::isa`): a copy this machine cannot run is
//! tested by a test that is ignored here (reported as ignored, not passed),
//! and that test checks the CPU again at run time.
//!
//! - `evocomp_host_avx2`, `evocomp_host_avx512`, `evocomp_host_avx512bf16`:
//!   set when the host is the target and has the features of that copy.

fn main() {
    for c in [
        "evocomp_host_avx2",
        "evocomp_host_avx512",
        "evocomp_host_avx512bf16",
    ] {
        println!("cargo::rustc-check-cfg=cfg({c})");
    }
    println!("cargo::rerun-if-changed=build.rs");
    let host = std::env::var("HOST").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    if host != target {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        let avx512 =
            avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl");
        if avx2 {
            println!("cargo::rustc-cfg=evocomp_host_avx2");
        }
        if avx512 {
            println!("cargo::rustc-cfg=evocomp_host_avx512");
        }
        if avx512 && has!("avx512bf16") {
            println!("cargo::rustc-cfg=evocomp_host_avx512bf16");
        }
    }
}
