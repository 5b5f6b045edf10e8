// Shared by the build scripts of crates that link libtorch (included with `include!`).
//
// torch-sys links libtorch but leaves two traps for binaries and tests:
// 1. `--as-needed` drops `libtorch_cuda.so` because no symbol of it is referenced directly, and
//    CUDA then silently disappears at run time. We re-add it with `--no-as-needed` when present.
// 2. libtorch lives in the venv, outside any system path. We embed an rpath so binaries and test
//    executables run without LD_LIBRARY_PATH.
// `rustc-link-arg` only reaches the final artifacts of the crate whose build script emits it,
// so every crate with binaries or tests that link torch includes this file.

fn torch_lib_dir() -> Option<std::path::PathBuf> {
    println!("cargo:rerun-if-env-changed=COORDEXP_TORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    if let Some(dir) = std::env::var_os("COORDEXP_TORCH_LIB") {
        return Some(dir.into());
    }
    if let Some(root) = std::env::var_os("LIBTORCH") {
        return Some(std::path::Path::new(&root).join("lib"));
    }
    let python = match std::env::var_os("VIRTUAL_ENV") {
        Some(v) => std::path::Path::new(&v).join("bin/python"),
        None => "python3".into(),
    };
    let out = std::process::Command::new(python)
        .args(["-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().into())
}

fn link_torch() {
    let Some(dir) = torch_lib_dir() else {
        println!("cargo:warning=libtorch not found: run scripts/setup.sh (bin/test and bin/coordexp do it for you)");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
