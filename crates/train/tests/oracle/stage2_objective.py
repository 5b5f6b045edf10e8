# Reference for the stage-2 objective, written from shared/reference/stage2_current.md §4 in
# float64 PyTorch: every module term of one window and the gradient of the total with respect to
# the logits.
import json
import math
import sys

import torch
import torch.nn.functional as F

inp = json.load(sys.stdin)
cfg = inp["cfg"]
K = 1000
first = inp["first"]
z = torch.tensor(inp["logits"], dtype=torch.float64, requires_grad=True)


def sanitize(x):
    return torch.nan_to_num(x, nan=0.0, posinf=1e4, neginf=-1e4).clamp(-1e4, 1e4)


def sl1(a, b):
    d = (a - b).abs()
    return torch.where(d < 1.0, 0.5 * d * d, d - 0.5)


text_rows = inp["text_rows"]
tw = torch.tensor(inp["text_weights"], dtype=torch.float64)
is_desc = torch.tensor([1.0 if k == "desc" else 0.0 for k in inp["text_kinds"]], dtype=torch.float64)
ce = F.cross_entropy(z[text_rows], torch.tensor(inp["text_targets"]), reduction="none")
W = tw.sum()
struct_ce = (ce * tw * (1 - is_desc)).sum() / W
desc_ce = (ce * tw * is_desc).sum() / W

coord_rows = inp["coord_rows"]
bins = torch.tensor(inp["coord_bins"])
sw = torch.tensor(inp["coord_weights"], dtype=torch.float64)
zc = sanitize(z[coord_rows])
coord = zc[:, first:first + K]
p1 = torch.softmax(coord, dim=1)
k = torch.arange(K, dtype=torch.float64) / 999.0
expected = (p1 * k).sum(1)
target = bins.double() / 999.0

slots = inp["box_slots"]
gw = torch.tensor(inp["box_weights"], dtype=torch.float64)
raw = expected[torch.tensor(slots).reshape(-1)].reshape(-1, 4)
gt = target[torch.tensor(slots).reshape(-1)].reshape(-1, 4)
x1 = torch.minimum(raw[:, 0], raw[:, 2]).clamp(0, 1)
x2 = torch.maximum(raw[:, 0], raw[:, 2]).clamp(0, 1)
y1 = torch.minimum(raw[:, 1], raw[:, 3]).clamp(0, 1)
y2 = torch.maximum(raw[:, 1], raw[:, 3]).clamp(0, 1)
pred = torch.stack([x1, y1, x2, y2], 1)
GW = gw.sum()
smoothl1 = (sl1(pred, gt).mean(1) * gw).sum() / GW

eps = 1e-7
pw, ph = x2 - x1, y2 - y1
gwid, ghei = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
iw = (torch.minimum(x2, gt[:, 2]) - torch.maximum(x1, gt[:, 0])).clamp(min=0)
ih = (torch.minimum(y2, gt[:, 3]) - torch.maximum(y1, gt[:, 1])).clamp(min=0)
inter = iw * ih
union = pw * ph + gwid * ghei - inter + eps
iou = inter / union
cw = torch.maximum(x2, gt[:, 2]) - torch.minimum(x1, gt[:, 0])
ch = torch.maximum(y2, gt[:, 3]) - torch.minimum(y1, gt[:, 1])
c2 = cw * cw + ch * ch + eps
rho2 = ((x1 + x2 - gt[:, 0] - gt[:, 2]) / 2) ** 2 + ((y1 + y2 - gt[:, 1] - gt[:, 3]) / 2) ** 2
v = (4 / math.pi ** 2) * (torch.atan(gwid / (ghei + eps)) - torch.atan(pw / (ph + eps))) ** 2
with torch.no_grad():
    alpha = v / ((1 - iou) + v + eps)
ciou = iou - rho2 / c2 - alpha * v
ciou_l = torch.nan_to_num(1 - ciou, nan=0.0, posinf=0.0, neginf=0.0)
bbox_ciou = (ciou_l * gw).sum() / GW

lw = torch.log(pw.clamp(min=1e-6))
lh = torch.log(ph.clamp(min=1e-6))
log_wh = ((sl1(lw, torch.log(gwid.clamp(min=1e-6))) + sl1(lh, torch.log(ghei.clamp(min=1e-6)))) * gw).sum() / GW

T = cfg["temperature"]
s = coord / T
log_p = torch.log_softmax(s, 1)
sigma, radius = cfg["sigma"], cfg["radius"]
d = torch.arange(K).double().unsqueeze(0) - bins.double().unsqueeze(1)
q = torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() <= radius)
q = q / q.sum(1, keepdim=True)
soft = -(q * log_p).sum(1)
w1 = (torch.cumsum(torch.softmax(s, 1), 1) - torch.cumsum(q, 1)).abs().sum(1) / 999.0
gate = (torch.logsumexp(zc / T, 1) - torch.logsumexp(s, 1)).clamp(min=0)
hard = torch.logsumexp(coord, 1) - coord.gather(1, bins.unsqueeze(1)).squeeze(1)
SW = sw.sum()
reg = {n: (t * sw).sum() / SW for n, t in [("coord_token_ce", hard), ("coord_soft_ce", soft), ("coord_w1", w1), ("coord_gate", gate)]}

zg = sanitize(z[inp["gate_rows"]]) / T
p_coord = torch.exp(torch.logsumexp(zg[:, first:first + K], 1) - torch.logsumexp(zg, 1))
text_gate = (-torch.log((1 - p_coord).clamp(min=1e-6))).sum() / len(inp["gate_rows"])

m = cfg["modules"]
terms = {
    "loss/text/struct_ce": m["token_ce"] * struct_ce,
    "loss/text/desc_ce": m["token_ce"] * desc_ce,
    "loss/coord/bbox_smoothl1": m["bbox_geo"] * cfg["smoothl1"] * smoothl1,
    "loss/coord/bbox_ciou": m["bbox_geo"] * cfg["ciou"] * bbox_ciou,
    "loss/coord/bbox_log_wh": m["bbox_size_aux"] * cfg["log_wh"] * log_wh,
    "loss/coord/coord_token_ce": m["coord_reg"] * cfg["coord_ce"] * reg["coord_token_ce"],
    "loss/coord/coord_soft_ce": m["coord_reg"] * cfg["soft_ce"] * reg["coord_soft_ce"],
    "loss/coord/coord_w1": m["coord_reg"] * cfg["w1"] * reg["coord_w1"],
    "loss/coord/coord_gate": m["coord_reg"] * cfg["gate"] * reg["coord_gate"],
    "loss/coord/text_gate": m["coord_reg"] * cfg["text_gate"] * text_gate,
}
total = sum(terms.values())
total.backward()
print(json.dumps({
    "terms": {k: float(v) for k, v in terms.items()},
    "total": float(total),
    "grad": z.grad.tolist(),
}))
