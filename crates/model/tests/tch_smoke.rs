//! libtorch is linked, loads, computes, and differentiates on CPU.

use tch::{Kind, Tensor};

#[test]
fn a_tensor_op_and_one_backward_pass_work_on_cpu() {
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
    let y = (&x * &x).sum(Kind::Float); // d/dx sum(x^2) = 2x
    assert_eq!(y.double_value(&[]), 14.0);
    y.backward();
    let g: Vec<f32> = Vec::try_from(x.grad()).unwrap();
    assert_eq!(g, vec![2.0, 4.0, 6.0]);
}

#[test]
fn the_runtime_reports_the_pinned_torch_version() {
    let info = coordexp_model::runtime::info();
    assert_eq!(info.torch_version, "2.11.0");
    assert!(info.cpu_threads >= 1);
}

#[test]
fn libtorch_cuda_stays_linked_when_the_install_has_it() {
    // `--as-needed` would drop libtorch_cuda.so (nothing references it directly) and CUDA would
    // silently vanish on GPU machines; build-support/torch_link.rs keeps it. Check it is loaded
    // whenever the torch install ships it (the PyPI wheel does, even on CPU-only machines).
    let _ = tch::Cuda::is_available();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let lib_dir = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(|p| std::path::Path::new(p).parent().unwrap().to_path_buf())
        .expect("libtorch_cpu.so is mapped");
    if lib_dir.join("libtorch_cuda.so").exists() {
        assert!(maps.contains("/libtorch_cuda.so"), "libtorch_cuda.so exists but was not linked");
    }
}
