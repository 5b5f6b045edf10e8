// Compiles csrc/shim.cpp against the c10d headers of the venv's torch wheel (and Debian's
// libgloo-dev headers, which the wheel lacks; scripts/setup.sh installs them). The symbols come
// from libtorch_cpu, which tch already links. Flags: `../shared/reference/c10d_notes.md`.
include!("../../build-support/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    let Some(lib) = torch_lib_dir() else {
        panic!(
            "libtorch not found: run scripts/setup.sh (bin/test and bin/coordexp do it for you)"
        );
    };
    let include = lib.parent().map(|p| p.join("include")).unwrap_or_default();
    if !std::path::Path::new("/usr/include/gloo/algorithm.h").exists() {
        panic!(
            "the Gloo headers are missing (/usr/include/gloo): run scripts/setup.sh, which installs \
             Debian's libgloo-dev (the torch wheel ships c10d's headers but not Gloo's)"
        );
    }
    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        .warnings(false)
        .compile("coordexp_dist_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    link_torch();
}
