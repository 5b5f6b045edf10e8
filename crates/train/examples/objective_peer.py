# PyTorch eager peer of the stage-1 objective, organised like the reference (objective_packing.md
# §3): HF-style cross-entropy over every supervised row with coordinate targets masked to -100,
# then the coordinate terms on the coordinate rows. Same shapes, dtype and threads as the Rust run.
import json
import sys
import time

import torch
import torch.nn.functional as F

cfg = json.load(sys.stdin)
torch.manual_seed(0)
n, vocab, first, k = cfg["n"], cfg["vocab"], cfg["first"], 1000
types = torch.tensor(cfg["is_coord"], dtype=torch.bool)
targets = torch.tensor(cfg["targets"])
bins = targets[types] - first
d = torch.arange(k)[None, :] - bins[:, None]
wq = torch.exp(-0.5 * (d / 1.5) ** 2) * (d.abs() <= 8)
q = (wq / wq.sum(-1, keepdim=True)).float()
logits = (torch.randn(n, vocab) * 3).requires_grad_(True)


def step():
    masked = torch.where(types, torch.full_like(targets, -100), targets)
    base = F.cross_entropy(logits, masked, ignore_index=-100)
    z = torch.nan_to_num(logits[types], nan=0.0, posinf=1e4, neginf=-1e4).clamp(-1e4, 1e4)
    t = 0.9
    s = z[:, first:first + k] / t
    soft = -(q * torch.log_softmax(s, -1)).sum(-1)
    p = torch.softmax(s, -1)
    w1 = (p.cumsum(-1) - q.cumsum(-1)).abs().sum(-1) / (k - 1)
    gate = (torch.logsumexp(z / t, -1) - torch.logsumexp(s, -1)).clamp(min=0)
    loss = base + (soft + 3 * w1 + 5 * gate).mean()
    loss.backward()
    logits.grad = None


for _ in range(cfg["warmup"]):
    step()
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(cfg["iters"]):
    step()
wall = (time.perf_counter() - t0) / cfg["iters"] * 1e3
cpu = (time.process_time() - c0) / cfg["iters"] * 1e3
print(json.dumps({"impl": "pytorch-eager", "n": n, "vocab": vocab, "wall_ms": wall, "cpu_ms": cpu,
                  "threads": torch.get_num_threads()}))
