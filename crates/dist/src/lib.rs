//! coordexp-dist: data-parallel training across processes on PyTorch's distributed engine
//! (c10d), launched by `torchrun`.
//!
//! We do not write a collective layer: a small C++ shim (`csrc/shim.cpp`, compiled against the
//! venv's torch headers) forms a process group over c10d's TCPStore — Gloo for CPU ranks, NCCL
//! for GPU ranks ([`Backend`]) — and collectives run in place on libtorch tensors (host-side
//! values of an NCCL group are staged through its GPU). [`Launch::from_env`] reads torchrun's environment; [`Group`]
//! offers the collectives training needs (sum, broadcast, a gather of host bytes, barrier), each
//! with the group's timeout.
//!
//! Why every collective is numbered and announced in the store first: when a rank dies or
//! stalls, the survivors' collective fails (a closed connection at once, a stall after the
//! timeout) with a message about sockets. The survivors report the failure in the store and
//! name the ranks that did not, with the last collective each announced — "rank 1 did not
//! answer (dead or stalled); its last collective was #12 (gradient all-reduce, step 6)": the
//! error a user needs instead of a hang.

use coordexp_core::{Error, Result};
use std::cell::Cell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::time::{Duration, Instant};
use tch::Tensor;

#[cfg(not(coordexp_no_c10d))]
unsafe extern "C" {
    fn cxd_group_new(
        host: *const c_char,
        port: i32,
        host_store: i32,
        prefix: *const c_char,
        rank: i32,
        world: i32,
        timeout_ms: i64,
        iface: *const c_char,
        gloo_host: *const c_char,
        nccl_device: i32,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    fn cxd_has_nccl() -> i32;
    fn cxd_group_free(g: *mut c_void);
    fn cxd_free_string(s: *mut c_char);
    fn cxd_all_reduce_sum(g: *mut c_void, tensor: *mut c_void, err: *mut *mut c_char) -> i32;
    fn cxd_broadcast(g: *mut c_void, tensor: *mut c_void, root: i32, err: *mut *mut c_char) -> i32;
    fn cxd_barrier(g: *mut c_void, err: *mut *mut c_char) -> i32;
    fn cxd_store_set(
        g: *mut c_void,
        key: *const c_char,
        value: *const c_char,
        err: *mut *mut c_char,
    ) -> i32;
    fn cxd_store_try_get(
        g: *mut c_void,
        key: *const c_char,
        value: *mut *mut c_char,
        err: *mut *mut c_char,
    ) -> i32;
}

/// A build without the c10d shim (the Gloo headers were missing): every entry point fails, and
/// [`Group::connect`] says so before calling any.
#[cfg(coordexp_no_c10d)]
#[allow(clippy::too_many_arguments)]
mod no_c10d {
    use std::ffi::{c_char, c_void};
    pub unsafe fn cxd_group_new(
        _: *const c_char,
        _: i32,
        _: i32,
        _: *const c_char,
        _: i32,
        _: i32,
        _: i64,
        _: *const c_char,
        _: *const c_char,
        _: i32,
        _: *mut *mut c_char,
    ) -> *mut c_void {
        std::ptr::null_mut()
    }
    pub unsafe fn cxd_has_nccl() -> i32 {
        0
    }
    pub unsafe fn cxd_group_free(_: *mut c_void) {}
    pub unsafe fn cxd_free_string(_: *mut c_char) {}
    pub unsafe fn cxd_all_reduce_sum(_: *mut c_void, _: *mut c_void, _: *mut *mut c_char) -> i32 {
        1
    }
    pub unsafe fn cxd_broadcast(
        _: *mut c_void,
        _: *mut c_void,
        _: i32,
        _: *mut *mut c_char,
    ) -> i32 {
        1
    }
    pub unsafe fn cxd_barrier(_: *mut c_void, _: *mut *mut c_char) -> i32 {
        1
    }
    pub unsafe fn cxd_store_set(
        _: *mut c_void,
        _: *const c_char,
        _: *const c_char,
        _: *mut *mut c_char,
    ) -> i32 {
        1
    }
    pub unsafe fn cxd_store_try_get(
        _: *mut c_void,
        _: *const c_char,
        _: *mut *mut c_char,
        _: *mut *mut c_char,
    ) -> i32 {
        1
    }
}
#[cfg(coordexp_no_c10d)]
use no_c10d::*;

/// Where this process stands in a multi-process launch (torchrun's environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store (`TORCHELASTIC_USE_AGENT_STORE`): every rank
    /// connects as a client. Otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// Keys are kept apart per launch attempt (`TORCHELASTIC_RUN_ID`, restart count).
    pub prefix: String,
    /// `GLOO_SOCKET_IFNAME`: the network interface Gloo uses.
    pub interface: Option<String>,
}

impl Launch {
    /// The launch described by `env` (a lookup such as `std::env::var`); `None` for a single
    /// process (no `WORLD_SIZE`, or 1).
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let Some(world) = env("WORLD_SIZE") else { return Ok(None) };
        let number = |name: &str, value: &str| {
            value.trim().parse::<usize>().map_err(|_| {
                Error::input(format!("{name}={value:?} is not a non-negative integer"))
                    .hint("launch with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")
            })
        };
        let world = number("WORLD_SIZE", &world)?;
        if world <= 1 {
            return Ok(None);
        }
        let required = |name: &str| {
            env(name).ok_or_else(|| {
                Error::input(format!("WORLD_SIZE={world} but {name} is not set"))
                    .hint("launch with torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")
            })
        };
        let rank = number("RANK", &required("RANK")?)?;
        if rank >= world {
            return Err(Error::input(format!("RANK={rank} is not below WORLD_SIZE={world}")));
        }
        let port = required("MASTER_PORT")?;
        let master_port = port
            .trim()
            .parse::<u16>()
            .map_err(|_| Error::input(format!("MASTER_PORT={port:?} is not a port number")))?;
        let local_rank = match env("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", &v)?,
            None => 0,
        };
        let run_id = env("TORCHELASTIC_RUN_ID").unwrap_or_else(|| "none".into());
        let restart = env("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        Ok(Some(Launch {
            rank,
            world,
            local_rank,
            master_addr: required("MASTER_ADDR")?,
            master_port,
            agent_store: env("TORCHELASTIC_USE_AGENT_STORE")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            prefix: format!("coordexp/{run_id}/{restart}/"),
            interface: env("GLOO_SOCKET_IFNAME").filter(|s| !s.is_empty()),
        }))
    }

    /// [`Launch::from_lookup`] on the process environment.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_lookup(|k| std::env::var(k).ok())
    }

    fn loopback(&self) -> bool {
        let a = self.master_addr.as_str();
        a == "localhost" || a.starts_with("127.") || a == "::1"
    }
}

/// Which c10d process group a rank joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo, on CPU tensors.
    Gloo,
    /// NCCL, on the tensors of CUDA device `N` (a rank's local GPU).
    Nccl(usize),
}

impl Backend {
    /// Where the group's collectives run (tensors elsewhere are staged there and back).
    pub fn device(self) -> tch::Device {
        match self {
            Backend::Gloo => tch::Device::Cpu,
            Backend::Nccl(i) => tch::Device::Cuda(i),
        }
    }
}

/// True when this build can form NCCL groups (compiled against a CUDA torch wheel with the
/// CUDA headers; see `build.rs`).
pub fn nccl_available() -> bool {
    // SAFETY: a constant function of the build.
    unsafe { cxd_has_nccl() != 0 }
}

/// A process group: this rank's handle on the collectives.
pub struct Group {
    raw: *mut c_void,
    rank: usize,
    world: usize,
    device: tch::Device,
    timeout: Duration,
    /// Collectives started so far (the number announced in the store).
    seq: Cell<u64>,
}

// The group is used by one thread at a time (the trainer's), which may change.
unsafe impl Send for Group {}

/// Gradients are summed in flat buckets of at most this many bytes: few large messages instead
/// of one per parameter, without doubling the memory of the gradients.
const BUCKET_BYTES: i64 = 64 << 20;

/// How long a rank whose collective failed waits for the other survivors to report the same
/// failure before naming the silent ones.
const SURVIVOR_GRACE: Duration = Duration::from_secs(3);

fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'ed string that we own.
    let s = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { cxd_free_string(err) };
    // A c10::Error's message ends with the C++ stack; the user needs the sentence before it.
    match s.find("\nException raised from") {
        Some(i) => s[..i].trim_end().to_string(),
        None => s,
    }
}

fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::input(format!("{s:?} contains a NUL byte")))
}

impl Group {
    /// Rendezvous with the other ranks of `launch` in a `backend` group (each collective, and
    /// the rendezvous itself, gives up after `timeout`).
    pub fn connect(launch: &Launch, timeout: Duration, backend: Backend) -> Result<Group> {
        if cfg!(coordexp_no_c10d) {
            return Err(Error::runtime(format!(
                "WORLD_SIZE={} but this coordexp was built without c10d (the Gloo headers were missing)",
                launch.world
            ))
            .hint("install Debian's libgloo-dev (scripts/setup.sh does) and rebuild, or run one process"));
        }
        let host = c_string(&launch.master_addr)?;
        let prefix = c_string(&launch.prefix)?;
        let iface = c_string(launch.interface.as_deref().unwrap_or(""))?;
        let gloo_host = if launch.loopback() {
            "127.0.0.1".to_string()
        } else {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        };
        let gloo_host = c_string(&gloo_host)?;
        if matches!(backend, Backend::Nccl(_)) && !nccl_available() {
            return Err(Error::runtime(format!(
                "WORLD_SIZE={} on GPUs needs NCCL, but this coordexp was built without it",
                launch.world
            ))
            .hint("build against a CUDA torch wheel with the CUDA headers of scripts/requirements-extra.txt (scripts/setup.sh installs them), or set model.device: cpu"));
        }
        let nccl_device = match backend {
            Backend::Gloo => -1,
            Backend::Nccl(i) => i as i32,
        };
        let host_store = i32::from(!launch.agent_store && launch.rank == 0);
        let mut err = std::ptr::null_mut();
        // SAFETY: every pointer is a live NUL-terminated string; the shim copies them.
        let raw = unsafe {
            cxd_group_new(
                host.as_ptr(),
                i32::from(launch.master_port),
                host_store,
                prefix.as_ptr(),
                launch.rank as i32,
                launch.world as i32,
                timeout.as_millis() as i64,
                iface.as_ptr(),
                gloo_host.as_ptr(),
                nccl_device,
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(Error::runtime(format!(
                "rank {} of {} could not join the process group at {}:{}: {}",
                launch.rank,
                launch.world,
                launch.master_addr,
                launch.master_port,
                take_error(err)
            ))
            .hint("check that every rank runs (torchrun starts them), that MASTER_ADDR:MASTER_PORT is reachable from this machine, GLOO_SOCKET_IFNAME on multi-homed machines, and on GPUs that each rank sees the GPU of its LOCAL_RANK"));
        }
        Ok(Group {
            raw,
            rank: launch.rank,
            world: launch.world,
            device: backend.device(),
            timeout,
            seq: Cell::new(0),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// Sum `tensors` over all ranks, in place (flattened into buckets per dtype).
    pub fn all_reduce_sum(&self, tensors: &[Tensor], phase: &str) -> Result<()> {
        let mut i = 0;
        while i < tensors.len() {
            let kind = tensors[i].kind();
            let mut bucket = vec![&tensors[i]];
            let mut bytes = tensors[i].numel() as i64 * kind.elt_size_in_bytes() as i64;
            i += 1;
            while i < tensors.len()
                && tensors[i].kind() == kind
                && bytes + tensors[i].numel() as i64 * kind.elt_size_in_bytes() as i64
                    <= BUCKET_BYTES
            {
                bytes += tensors[i].numel() as i64 * kind.elt_size_in_bytes() as i64;
                bucket.push(&tensors[i]);
                i += 1;
            }
            self.reduce_bucket(&bucket, phase)?;
        }
        Ok(())
    }

    fn reduce_bucket(&self, bucket: &[&Tensor], phase: &str) -> Result<()> {
        if let [only] = bucket
            && only.is_contiguous()
            && only.device() == self.device
        {
            return self.collective(phase, |err| unsafe {
                cxd_all_reduce_sum(self.raw, only.as_ptr() as *mut c_void, err)
            });
        }
        let flat = Tensor::cat(&bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
            .to_device(self.device);
        self.collective(phase, |err| unsafe {
            cxd_all_reduce_sum(self.raw, flat.as_ptr() as *mut c_void, err)
        })?;
        let mut at = 0;
        for t in bucket {
            let n = t.numel() as i64;
            let mut dst = t.shallow_clone();
            dst.f_copy_(&flat.narrow(0, at, n).view(t.size().as_slice())).map_err(|e| {
                Error::runtime(format!("{phase}: copying a reduced bucket back: {e}"))
            })?;
            at += n;
        }
        Ok(())
    }

    /// Overwrite each of `tensors` with rank `root`'s.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize, phase: &str) -> Result<()> {
        for t in tensors {
            let (buf, copy_back) = if t.is_contiguous() && t.device() == self.device {
                (t.shallow_clone(), false)
            } else {
                (t.contiguous().to_device(self.device), true)
            };
            self.collective(phase, |err| unsafe {
                cxd_broadcast(self.raw, buf.as_ptr() as *mut c_void, root as i32, err)
            })?;
            if copy_back {
                t.shallow_clone().f_copy_(&buf).map_err(|e| {
                    Error::runtime(format!("{phase}: copying a broadcast back: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// Rank `root`'s bytes on every rank (`bytes` is read on `root` only).
    pub fn broadcast_bytes(
        &self,
        bytes: Option<&[u8]>,
        root: usize,
        phase: &str,
    ) -> Result<Vec<u8>> {
        let mine = bytes.filter(|_| self.rank == root).unwrap_or(&[]);
        let len = Tensor::from_slice(&[mine.len() as i64]);
        self.broadcast(std::slice::from_ref(&len), root, phase)?;
        let n = len.int64_value(&[0]);
        let buf = if self.rank == root {
            Tensor::from_slice(mine)
        } else {
            Tensor::zeros([n], (tch::Kind::Uint8, tch::Device::Cpu))
        };
        self.broadcast(std::slice::from_ref(&buf), root, phase)?;
        Vec::<u8>::try_from(&buf)
            .map_err(|e| Error::runtime(format!("reading broadcast bytes: {e}")))
    }

    /// Every rank's `mine`, in rank order, on every rank (one broadcast per rank: for the
    /// small host-side payloads of a step, such as the rollouts each rank generated).
    pub fn all_gather_bytes(&self, mine: &[u8], phase: &str) -> Result<Vec<Vec<u8>>> {
        (0..self.world)
            .map(|root| {
                let bytes = (root == self.rank).then_some(mine);
                self.broadcast_bytes(bytes, root, &format!("{phase} (from rank {root})"))
            })
            .collect()
    }

    /// Wait until every rank arrives (rank 0 writing a checkpoint, evaluating).
    pub fn barrier(&self, phase: &str) -> Result<()> {
        self.collective(phase, |err| unsafe { cxd_barrier(self.raw, err) })
    }

    /// Sum `values` over all ranks (f64, on the host).
    pub fn sum_f64(&self, values: &mut [f64], phase: &str) -> Result<()> {
        let t = Tensor::from_slice(values);
        self.all_reduce_sum(std::slice::from_ref(&t), phase)?;
        let summed = Vec::<f64>::try_from(&t)
            .map_err(|e| Error::runtime(format!("reading a reduced tensor: {e}")))?;
        values.copy_from_slice(&summed);
        Ok(())
    }

    /// Announce collective number `seq` in `phase`, run it, and on failure name the ranks that
    /// are gone (see [`Group::silent_ranks`]).
    fn collective(&self, phase: &str, run: impl FnOnce(*mut *mut c_char) -> i32) -> Result<()> {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        self.store_set(&format!("coordexp_at/{}", self.rank), &format!("{seq} {phase}"))?;
        let started = Instant::now();
        let mut err = std::ptr::null_mut();
        if run(&mut err) == 0 {
            return Ok(());
        }
        let cause = take_error(err);
        let after = started.elapsed();
        let silent = self.silent_ranks(seq);
        let who = if silent.is_empty() {
            "every other rank reports the failure too".to_string()
        } else {
            silent.join("; ")
        };
        Err(Error::runtime(format!(
            "rank {} of {}: collective #{seq} ({phase}) failed after {:.1} s: {who}. c10d: {}",
            self.rank,
            self.world,
            after.as_secs_f64(),
            cause.lines().next().unwrap_or("")
        ))
        .hint(format!(
            "a rank that dies or stalls stops the others within train.collective_timeout_s ({} s); \
             its own log (torchrun prints each rank's exit) says why",
            self.timeout.as_secs()
        )))
    }

    /// After collective `seq` failed here: report the failure in the store, give the other
    /// ranks a moment to report theirs, and describe every rank that did not — dead or stalled —
    /// with the last collective it announced.
    fn silent_ranks(&self, seq: u64) -> Vec<String> {
        let _ = self.store_set(&format!("coordexp_failed/{}", self.rank), &seq.to_string());
        let others: Vec<usize> = (0..self.world).filter(|&r| r != self.rank).collect();
        let reported = |r: usize| {
            self.store_try_get(&format!("coordexp_failed/{r}"))
                .ok()
                .flatten()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= seq)
        };
        let grace = Instant::now() + SURVIVOR_GRACE.min(self.timeout);
        while Instant::now() < grace && !others.iter().all(|&r| reported(r)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        others
            .into_iter()
            .filter(|&r| !reported(r))
            .map(|r| match self.store_try_get(&format!("coordexp_at/{r}")) {
                Ok(None) => format!("rank {r} did not answer (dead or stalled) and never started a collective"),
                Ok(Some(v)) => {
                    let (n, what) = v.split_once(' ').unwrap_or((&v, ""));
                    format!("rank {r} did not answer (dead or stalled); its last collective was #{n} ({what})")
                }
                Err(_) => format!(
                    "rank {r} is unknown: the rendezvous store is unreachable (its host, \
                     torchrun's agent or rank 0, is gone)"
                ),
            })
            .collect()
    }

    fn store_set(&self, key: &str, value: &str) -> Result<()> {
        let (k, v) = (c_string(key)?, c_string(value)?);
        let mut err = std::ptr::null_mut();
        // SAFETY: live strings; the shim copies them.
        if unsafe { cxd_store_set(self.raw, k.as_ptr(), v.as_ptr(), &mut err) } != 0 {
            return Err(Error::runtime(format!(
                "rank {}: the rendezvous store is unreachable: {}",
                self.rank,
                take_error(err)
            ))
            .hint("the store's host (torchrun's agent, or rank 0) has gone away"));
        }
        Ok(())
    }

    fn store_try_get(&self, key: &str) -> Result<Option<String>> {
        let k = c_string(key)?;
        let (mut value, mut err) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: a live key; the shim returns an owned string or null.
        if unsafe { cxd_store_try_get(self.raw, k.as_ptr(), &mut value, &mut err) } != 0 {
            return Err(Error::runtime(take_error(err)));
        }
        Ok((!value.is_null()).then(|| take_error(value)))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from cxd_group_new and is freed once.
        unsafe { cxd_group_free(self.raw) }
    }
}

#[cfg(test)]
mod tests;
