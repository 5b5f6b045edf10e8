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
