// The C boundary between coordexp (Rust) and PyTorch's distributed engine (c10d): a TCPStore
// rendezvous and a process group — Gloo for CPU tensors, NCCL for CUDA tensors when compiled
// with USE_C10D_NCCL (build.rs does when the torch wheel and the CUDA headers allow it) — with
// collectives on libtorch tensors in place.
//
// Every entry point catches C++ exceptions and returns them as a malloc'ed message in *err
// (freed with cxd_free_string); nothing here prints or aborts. Tensors arrive as the
// `at::Tensor*` that a tch::Tensor wraps, so collectives work on the tensors' own memory.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Millis = std::chrono::milliseconds;

char* copy_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p != nullptr) {
    std::memcpy(p, s.c_str(), s.size() + 1);
  }
  return p;
}

template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    *err = copy_string(e.what());
  } catch (...) {
    *err = copy_string("unknown C++ exception");
  }
  return 1;
}

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  Millis timeout;
  bool gloo;
};

// Why collectives are launched under one process-wide lock: torch 2.11's flight recorder (on by
// default, TORCH_FR_BUFFER_SIZE) adds a new group to a process-wide map outside its own lock at
// the group's first collective, so two groups of one process launching at once corrupt the map
// and a later collective crashes (seen with two ranks as threads of one test process, about one
// run in six). A Gloo launch only queues the work and returns, so the lock is held for
// microseconds and never while waiting on a peer. NCCL launches are left alone: the first one
// joins a collective communicator set-up and would deadlock two ranks of one process holding the
// lock — coordexp runs one NCCL rank per process, where there is nothing to race with.
std::mutex launch_mutex;

template <typename F>
c10::intrusive_ptr<c10d::Work> launch(Group* group, F&& f) {
  if (!group->gloo) {
    return f();
  }
  std::lock_guard<std::mutex> lock(launch_mutex);
  return f();
}

std::vector<at::Tensor> tensors_of(void* const* ptrs, int n) {
  std::vector<at::Tensor> v;
  v.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    v.push_back(*static_cast<at::Tensor*>(ptrs[i]));
  }
  return v;
}

}  // namespace

extern "C" {

// 1 when this shim can form NCCL groups.
int cxd_has_nccl() {
#ifdef USE_C10D_NCCL
  return 1;
#else
  return 0;
#endif
}

// Connect to (or, with host_store != 0, host) the TCPStore at host:port and form a group of
// `world` ranks under `prefix`: NCCL on CUDA device `nccl_device` when it is >= 0, else Gloo.
// `iface` names the network interface Gloo uses (empty: the one `gloo_host` resolves to).
void* cxd_group_new(const char* host, int port, int host_store, const char* prefix, int rank,
                    int world, int64_t timeout_ms, const char* iface, const char* gloo_host,
                    int nccl_device, char** err) {
  Group* out = nullptr;
  guarded(err, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = host_store != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = Millis(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (nccl_device >= 0) {
#ifdef USE_C10D_NCCL
      // NCCL's wait() honours the timeout (and throws, naming the collective) only in blocking
      // mode; otherwise a dead peer would surface as a watchdog abort of the whole process.
      setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(nccl_device));
      auto nccl = c10d::ProcessGroupNCCL::Options::create();
      nccl->timeout = Millis(timeout_ms);
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, nccl);
#else
      throw std::runtime_error(
          "this coordexp was built without NCCL (the torch wheel or the CUDA headers were "
          "missing at build time)");
#endif
    } else {
      auto gloo = c10d::ProcessGroupGloo::Options::create(Millis(timeout_ms));
      if (iface != nullptr && iface[0] != '\0') {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      } else {
        gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(gloo_host));
      }
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo);
    }
    out = new Group{store, pg, Millis(timeout_ms), nccl_device < 0};
  });
  return out;
}

void cxd_group_free(void* g) { delete static_cast<Group*>(g); }

void cxd_free_string(char* s) { std::free(s); }

// Sum `tensor` over all ranks, in place.
int cxd_all_reduce_sum(void* g, void* tensor, char** err) {
  auto* group = static_cast<Group*>(g);
  return guarded(err, [&] {
    auto v = tensors_of(&tensor, 1);
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = group->timeout;
    launch(group, [&] { return group->pg->allreduce(v, o); })->wait(group->timeout);
  });
}

// Overwrite `tensor` on every rank with rank `root`'s.
int cxd_broadcast(void* g, void* tensor, int root, char** err) {
  auto* group = static_cast<Group*>(g);
  return guarded(err, [&] {
    auto v = tensors_of(&tensor, 1);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    o.timeout = group->timeout;
    launch(group, [&] { return group->pg->broadcast(v, o); })->wait(group->timeout);
  });
}

int cxd_barrier(void* g, char** err) {
  auto* group = static_cast<Group*>(g);
  return guarded(err, [&] {
    c10d::BarrierOptions o;
    o.timeout = group->timeout;
    launch(group, [&] { return group->pg->barrier(o); })->wait(group->timeout);
  });
}

// store[key] = value.
int cxd_store_set(void* g, const char* key, const char* value, char** err) {
  auto* group = static_cast<Group*>(g);
  return guarded(err, [&] {
    std::string v(value);
    group->store->set(key, std::vector<uint8_t>(v.begin(), v.end()));
  });
}

// *value = store[key] (malloc'ed), or null when the key does not exist (no waiting).
int cxd_store_try_get(void* g, const char* key, char** value, char** err) {
  auto* group = static_cast<Group*>(g);
  *value = nullptr;
  return guarded(err, [&] {
    if (group->store->check({std::string(key)})) {
      auto bytes = group->store->get(key);
      *value = copy_string(std::string(bytes.begin(), bytes.end()));
    }
  });
}

}  // extern "C"
