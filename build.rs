//! Embeds an rpath to libtorch so `target/release/modeconn` runs with no
//! environment variables set.
//!
//! The PyPI torch wheel always ships `libtorch_cuda.so`, but it only loads
//! when the CUDA libraries (the `nvidia-*` wheels) are installed too. So
//! `libtorch_cuda` is linked — with `--no-as-needed`, since nothing refers to
//! its symbols directly and its kernels register themselves at load time —
//! only when those libraries are present (the GPU install, `make gpu`), or
//! when `MODECONN_CUDA=1` forces it. `MODECONN_CUDA=0` forces a CPU build.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=MODECONN_CUDA");
    println!("cargo::rustc-check-cfg=cfg(modeconn_cuda)");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib = Path::new(&lib);
    let has_cuda_lib = lib.join("libtorch_cuda.so").exists();
    // <site-packages>/torch/lib -> <site-packages>/nvidia/cusparse (full CUDA wheel set)
    let cuda_runtime_present = lib
        .parent()
        .and_then(|t| t.parent())
        .map(|sp| {
            sp.join("nvidia").join("cusparse").exists()
                || sp
                    .join("nvidia")
                    .join("cu13")
                    .join("lib")
                    .join("libcusparse.so.12")
                    .exists()
        })
        .unwrap_or(false);
    let want = match std::env::var("MODECONN_CUDA").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => cuda_runtime_present,
    };
    if has_cuda_lib && want {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        println!("cargo:rustc-cfg=modeconn_cuda");
    }
}
