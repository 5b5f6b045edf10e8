// Compiles csrc/shim.cpp against the c10d headers of the venv's torch wheel (and Debian's
// libgloo-dev headers, which the wheel lacks; scripts/setup.sh installs them). The symbols come
// from libtorch_cpu, which tch already links. Flags: `../shared/reference/c10d_notes.md`.
include!("../../build-support/torch_link.rs");

/// The libstdc++ ABI the torch wheel was built with (`torch._C._GLIBCXX_USE_CXX11_ABI`); the
/// shim must match it or std::string arguments cross the boundary garbled. 1 when unknown
/// (every current wheel).
fn cxx11_abi() -> &'static str {
    let python = match std::env::var_os("VIRTUAL_ENV") {
        Some(v) => std::path::Path::new(&v).join("bin/python"),
        None => "python3".into(),
    };
    let out = std::process::Command::new(python)
        .args(["-c", "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"])
        .output();
    match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0" => "0",
        _ => "1",
    }
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo::rustc-check-cfg=cfg(coordexp_no_c10d)");
    let Some(lib) = torch_lib_dir() else {
        panic!(
            "libtorch not found: run scripts/setup.sh (bin/test and bin/coordexp do it for you)"
        );
    };
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    println!("cargo:rerun-if-changed=/usr/include/gloo/algorithm.h");
    if !std::path::Path::new("/usr/include/gloo/algorithm.h").exists() {
        // One-process coordexp builds and runs without them; a multi-process launch then stops
        // at once saying what to install.
        println!(
            "cargo:warning=the Gloo headers are missing (/usr/include/gloo): building without \
             multi-process training; scripts/setup.sh installs Debian's libgloo-dev"
        );
        println!("cargo:rustc-cfg=coordexp_no_c10d");
        link_torch();
        return;
    }
    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi())
        .define("USE_C10D_GLOO", None)
        .warnings(false)
        .compile("coordexp_dist_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    link_torch();
}
