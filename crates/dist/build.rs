// Compiles csrc/shim.cpp against the c10d headers of the venv's torch wheel (and Debian's
// libgloo-dev headers, which the wheel lacks; scripts/setup.sh installs them). The symbols come
// from libtorch_cpu, which tch already links. Flags: `../shared/reference/c10d_notes.md`.
// With a CUDA wheel and the CUDA headers of the venv's nvidia packages (scripts/
// requirements-extra.txt adds the two the wheels lack) the NCCL path is compiled too
// (`-DUSE_C10D_NCCL -DUSE_CUDA`, linking libtorch_cuda and libc10_cuda; cfg `coordexp_nccl`).
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

/// The include directories the NCCL path needs (nccl.h and the CUDA runtime headers with their
/// crt/ and nv/ parts), when the wheel beside `lib` is a CUDA build and they are all there.
fn nccl_includes(lib: &std::path::Path) -> Option<Vec<std::path::PathBuf>> {
    if !lib.join("libtorch_cuda.so").exists() || !lib.join("libc10_cuda.so").exists() {
        return None;
    }
    let nvidia = lib.parent()?.parent()?.join("nvidia");
    // Watch the folder, not files that may be missing (a missing path reruns every build).
    println!("cargo:rerun-if-changed={}", nvidia.display());
    let nccl = nvidia.join("nccl/include");
    let cuda = std::fs::read_dir(&nvidia)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("include")))
        .find(|d| d.join("cuda_runtime.h").exists())?;
    let wanted = [nccl.join("nccl.h"), cuda.join("crt/host_config.h"), cuda.join("nv/target")];
    wanted.iter().all(|f| f.exists()).then_some(vec![cuda, nccl])
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo::rustc-check-cfg=cfg(coordexp_no_c10d)");
    println!("cargo::rustc-check-cfg=cfg(coordexp_nccl)");
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
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi())
        .define("USE_C10D_GLOO", None)
        .warnings(false);
    let nccl = nccl_includes(&lib);
    // Whether the wheel is a CUDA build (a test checks that such a wheel gets the NCCL path).
    let cuda_wheel = lib.join("libtorch_cuda.so").exists();
    println!("cargo:rustc-env=COORDEXP_TORCH_CUDA_WHEEL={}", u8::from(cuda_wheel));
    match &nccl {
        Some(dirs) => {
            build.define("USE_C10D_NCCL", None).define("USE_CUDA", None).includes(dirs);
            println!("cargo:rustc-cfg=coordexp_nccl");
        }
        None => println!(
            "cargo:warning=building the c10d shim without NCCL (needs a CUDA torch wheel and \
             the CUDA headers of scripts/requirements-extra.txt): GPU ranks will be refused"
        ),
    }
    build.compile("coordexp_dist_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl.is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    link_torch();
}
