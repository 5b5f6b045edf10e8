# Reference for the stage-1 objective, written from the formulas in
# shared/reference/objective_packing.md §3.2 in float64 PyTorch: per term, the window-normalised
# value and its gradient with respect to the logits.
import json
import sys

import torch
import torch.nn.functional as F

inp = json.load(sys.stdin)
K = 1000
first = inp["first"]
cfg = inp["cfg"]
win = inp["window"]
types = inp["types"]
targets = torch.tensor(inp["targets"])

base = torch.tensor(inp["logits"], dtype=torch.float64)
for r, c, v in inp["specials"]:
    base[r, c] = float(v)

coord_rows = [i for i, t in enumerate(types) if t == "coord"]
text_rows = [i for i, t in enumerate(types) if t != "coord"]
n_text = win["struct"] + win["desc"] + win["closure"]
n_coord = win["coord"]
if cfg["normalize"] == "per_token":
    d_text = d_coord = n_text + n_coord
elif cfg["normalize"] == "per_pack_mean":
    # The reference (objective_packing.md §3.4): this pack's own means, divided by the
    # accumulation steps (the window's micro-batch count).
    packs = win["micro_batches"]
    d_text = len(text_rows) * packs
    d_coord = len(coord_rows) * packs
else:
    d_text, d_coord = n_text, n_coord


def sanitize(z):
    return torch.nan_to_num(z, nan=0.0, posinf=1e4, neginf=-1e4).clamp(-1e4, 1e4)


def terms(z):
    out = {}
    ce = F.cross_entropy(z[text_rows], targets[text_rows], reduction="none")
    w = torch.tensor([cfg["token_weights"][types[i]] for i in text_rows], dtype=torch.float64)
    out["text_ce"] = (w * ce).sum() / max(d_text, 1)

    zc = sanitize(z[coord_rows])
    t = cfg["temperature"]
    bins = targets[coord_rows] - first
    coord = zc[:, first:first + K]
    s = coord / t
    k = torch.arange(K, dtype=torch.float64)
    d = k[None, :] - bins[:, None].double()
    wq = torch.exp(-0.5 * (d / cfg["sigma"]) ** 2) * (d.abs() <= cfg["radius"])
    q = wq / wq.sum(-1, keepdim=True)
    out["soft_ce"] = -(q * torch.log_softmax(s, -1)).sum() / max(d_coord, 1)
    p = torch.softmax(s, -1)
    out["w1"] = (p.cumsum(-1) - q.cumsum(-1)).abs().sum() / (K - 1) / max(d_coord, 1)
    gate = torch.logsumexp(zc / t, -1) - torch.logsumexp(s, -1)
    out["gate"] = gate.clamp(min=0).sum() / max(d_coord, 1)
    out["hard_ce"] = F.cross_entropy(coord, bins, reduction="none").sum() / max(d_coord, 1)
    return out


weights = {
    "text_ce": cfg["text_ce"],
    "soft_ce": cfg["soft_ce"],
    "w1": cfg["w1"],
    "gate": cfg["gate"],
    "hard_ce": cfg["hard_ce"],
}
result = {}
for name in list(weights) + ["total"]:
    z = base.clone().requires_grad_(True)
    parts = terms(z)
    value = sum(weights[k] * v for k, v in parts.items()) if name == "total" else parts[name]
    value.backward()
    result[name] = {"value": value.item(), "grad": z.grad.tolist()}
print(json.dumps(result))
