# torch.optim.AdamW with the same parameter groups, schedule factors (LambdaLR) and global
# gradient-norm clipping, driven by given gradients; prints the parameters after every step.
import json
import sys

import torch

inp = json.load(sys.stdin)
params = {n: torch.tensor(v, dtype=torch.float32).requires_grad_(True) for n, v in inp["params"].items()}
groups = {}
for name, key in inp["groups"].items():
    groups.setdefault(key, []).append(params[name])
opt = torch.optim.AdamW(
    [
        {"params": ps, "lr": inp["lr"][key], "weight_decay": inp["weight_decay"][key]}
        for key, ps in groups.items()
    ],
    betas=tuple(inp["betas"]),
    eps=inp["eps"],
)
factors = inp["factors"]
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: factors[s])
trace = []
for step_grads in inp["grads"]:
    opt.zero_grad(set_to_none=True)
    for name, g in step_grads.items():
        params[name].grad = torch.tensor(g, dtype=torch.float32)
    with_grad = [p for p in params.values() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(with_grad, inp["clip"])
    opt.step()
    sched.step()
    trace.append({"norm": norm.item(), "params": {n: p.detach().tolist() for n, p in params.items()}})
print(json.dumps(trace))
