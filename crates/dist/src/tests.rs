use super::*;
use std::collections::HashMap;
use std::time::Duration;
use tch::Kind;

fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> =
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k| map.get(k).cloned()
}

#[test]
fn one_process_is_no_launch_and_a_broken_environment_is_an_input_error() {
    assert_eq!(Launch::from_lookup(lookup(&[])).unwrap(), None);
    assert_eq!(Launch::from_lookup(lookup(&[("WORLD_SIZE", "1")])).unwrap(), None);
    let e = Launch::from_lookup(lookup(&[("WORLD_SIZE", "2")])).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("RANK"), "{e}");
    let e = Launch::from_lookup(lookup(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("not below"), "{e}");
    let l = Launch::from_lookup(lookup(&[
        ("WORLD_SIZE", "4"),
        ("RANK", "3"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29400"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("TORCHELASTIC_RUN_ID", "job7"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((l.rank, l.world, l.local_rank, l.master_port), (3, 4, 1, 29400));
    assert!(l.agent_store && !l.loopback());
    assert_eq!(l.prefix, "coordexp/job7/2/");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn launch(rank: usize, world: usize, port: u16) -> Launch {
    Launch {
        rank,
        world,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        prefix: "coordexp/test/0/".into(),
        interface: None,
    }
}

/// Run `body(rank, group)` on two ranks (threads) of one group.
fn two_ranks<T: Send + 'static>(
    timeout: Duration,
    body: impl Fn(usize, Group) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let body = body.clone();
            std::thread::spawn(move || {
                body(rank, Group::connect(&launch(rank, 2, port), timeout, Backend::Gloo).unwrap())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn sums_broadcasts_and_barriers_reach_every_rank_in_place() {
    let out = two_ranks(Duration::from_secs(30), |rank, g| {
        let r = rank as f64 + 1.0;
        // Mixed kinds and shapes: a and c share a flattened bucket (copied back), b is alone.
        let a = Tensor::full([3], r, (Kind::Float, tch::Device::Cpu));
        let b = Tensor::full([2, 2], 10.0 * r, (Kind::Double, tch::Device::Cpu));
        let c = Tensor::full([2, 3], r, (Kind::Float, tch::Device::Cpu));
        g.all_reduce_sum(&[a.shallow_clone(), c.shallow_clone(), b.shallow_clone()], "test sum")
            .unwrap();
        let mut host = [r, -r];
        g.sum_f64(&mut host, "test host sum").unwrap();
        let w = Tensor::full([4], r, (Kind::Float, tch::Device::Cpu)).tr_view();
        g.broadcast(std::slice::from_ref(&w), 1, "test broadcast").unwrap();
        g.barrier("test barrier").unwrap();
        (
            Vec::<f32>::try_from(&a).unwrap(),
            Vec::<f64>::try_from(&b.reshape([-1])).unwrap(),
            Vec::<f32>::try_from(&c.reshape([-1])).unwrap(),
            host,
            Vec::<f32>::try_from(&w).unwrap(),
        )
    });
    for (a, b, c, host, w) in out {
        assert_eq!(a, vec![3.0; 3]);
        assert_eq!(b, vec![30.0; 4]);
        assert_eq!(c, vec![3.0; 6]);
        assert_eq!(host, [3.0, -3.0]);
        assert_eq!(w, vec![2.0; 4]);
    }
}

#[test]
fn gathered_bytes_arrive_in_rank_order_on_every_rank_whatever_their_lengths() {
    let out = two_ranks(Duration::from_secs(30), |rank, g| {
        // Rank 0 has nothing to share, rank 1 three bytes.
        let mine: Vec<u8> = if rank == 0 { Vec::new() } else { vec![7, 0, 255] };
        g.all_gather_bytes(&mine, "test gather").unwrap()
    });
    for gathered in out {
        assert_eq!(gathered, vec![Vec::new(), vec![7, 0, 255]]);
    }
}

trait TrView {
    fn tr_view(self) -> Tensor;
}

impl TrView for Tensor {
    /// A 1-D tensor as a strided (non-contiguous) view of a larger one.
    fn tr_view(self) -> Tensor {
        Tensor::cat(&[self.unsqueeze(1), self.unsqueeze(1)], 1).select(1, 0)
    }
}

#[test]
fn a_rank_that_leaves_ends_the_next_collective_with_an_error_naming_it_and_the_phase() {
    let out = two_ranks(Duration::from_secs(5), |rank, g| {
        g.barrier("warm-up").unwrap();
        if rank == 1 {
            drop(g);
            return None;
        }
        let started = Instant::now();
        let t = Tensor::ones([8], (Kind::Float, tch::Device::Cpu));
        let e = g.all_reduce_sum(&[t], "gradient all-reduce, step 7").unwrap_err();
        Some((e.to_string(), started.elapsed()))
    });
    let (message, took) = out.into_iter().flatten().next().unwrap();
    assert!(message.contains("rank 1 did not answer"), "{message}");
    assert!(message.contains("#2 (gradient all-reduce, step 7) failed"), "{message}");
    assert!(message.contains("its last collective was #1 (warm-up)"), "{message}");
    assert!(took < Duration::from_secs(15), "gave up after {took:?}");
}

#[test]
fn a_cuda_torch_wheel_gets_the_nccl_path() {
    // scripts/requirements.txt pins a CUDA torch wheel and requirements-extra.txt the CUDA
    // headers it lacks: with such a wheel build.rs must compile ProcessGroupNCCL in (a CPU-only
    // wheel cannot).
    let cuda_wheel = env!("COORDEXP_TORCH_CUDA_WHEEL") == "1";
    assert_eq!(nccl_available(), cuda_wheel, "build.rs missed the NCCL path (see its warning)");
}

#[test]
fn an_nccl_group_sums_on_its_gpu_or_fails_to_form_without_one() {
    let port = free_port();
    let joined = Group::connect(&launch(0, 1, port), Duration::from_secs(20), Backend::Nccl(0));
    if tch::Cuda::is_available() {
        // One rank on GPU 0: a host tensor is staged through the GPU and comes back summed.
        let g = joined.unwrap();
        let mut v = [1.5, -2.0];
        g.sum_f64(&mut v, "nccl smoke").unwrap();
        assert_eq!(v, [1.5, -2.0]);
        let t = Tensor::ones([4], (Kind::Float, tch::Device::Cuda(0)));
        g.all_reduce_sum(std::slice::from_ref(&t), "nccl smoke on the GPU").unwrap();
        assert_eq!(Vec::<f32>::try_from(&t.to_device(tch::Device::Cpu)).unwrap(), vec![1.0; 4]);
    } else {
        // No GPU: an error from the shim (CUDA's own message), never a crash.
        let e = joined.err().expect("an NCCL group formed without a GPU").to_string();
        eprintln!("without a GPU: {e}");
        assert!(e.contains("could not join"), "{e}");
    }
}
