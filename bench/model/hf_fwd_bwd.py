"""Forward+backward throughput of transformers' Qwen3-VL on the same packed batch as
crates/model/examples/fwd_bwd.rs (see README.md). Prints one JSON line."""
import argparse
import json
import time

import numpy as np
import torch
from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--device", default="cpu")
ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--tokens", type=int, default=2048)
a = ap.parse_args()
dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
dev = torch.device(a.device)

cfg_json = json.load(open(a.config))
cfg = Qwen3VLConfig(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "model_type")})
torch.manual_seed(0)
model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa", dtype=dtype).to(dev).train()

# The same pack as the Rust side: segment 0 = 4 text tokens, <vision_start>, 64 image pads,
# <vision_end>, text; then three text-only segments. Positions: get_rope_index per segment, with
# the text row restarting per segment (transformers derives the packed block mask from it).
total, segments = a.tokens, 4
seg_len = total // segments
rgb = (np.arange(256 * 256 * 3) * 131 % 251).astype(np.uint8).reshape(256, 256, 3)
proc = Qwen2VLImageProcessor(do_resize=False, patch_size=16, merge_size=2, temporal_patch_size=2,
                             image_mean=[0.5] * 3, image_std=[0.5] * 3)
px = proc(images=[rgb], return_tensors="pt")
ids, types, rows = [], [], []
for s in range(segments):
    n_len = total - seg_len * (segments - 1) if s == segments - 1 else seg_len
    seg, ty = [], []
    if s == 0:
        seg = [100 + k for k in range(4)] + [cfg.vision_start_token_id] + [cfg.image_token_id] * 64 + [cfg.vision_end_token_id]
        ty = [0] * 5 + [1] * 64 + [0]
    n = len(seg)
    seg += [1000 + (k * 7919 + s * 31) % 15000 for k in range(n, n_len)]
    ty += [0] * (n_len - n)
    t_ids = torch.tensor([seg])
    pos3, _ = model.model.get_rope_index(t_ids, torch.tensor([ty]),
                                         image_grid_thw=px["image_grid_thw"] if s == 0 else None)
    rows.append(torch.cat([torch.arange(n_len).view(1, 1, -1), pos3], 0))
    ids += seg
    types += ty
input_ids = torch.tensor([ids], device=dev)
position_ids = torch.cat(rows, 2).to(dev)
pixel_values = px["pixel_values"].to(dev, dtype)
grid = px["image_grid_thw"].to(dev)


def step():
    out = model(input_ids=input_ids, position_ids=position_ids, pixel_values=pixel_values, image_grid_thw=grid)
    logits = out.logits[0, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits, input_ids[0, 1:])
    loss.backward()
    model.zero_grad(set_to_none=False)
    return loss.item()


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


step()
sync()
t0 = time.perf_counter()
for _ in range(a.steps):
    loss = step()
sync()
secs = time.perf_counter() - t0
print(json.dumps({"impl": "transformers", "device": str(dev), "dtype": a.dtype, "tokens": total,
                  "steps": a.steps, "seconds": secs, "tokens_per_s": total * a.steps / secs,
                  "threads": torch.get_num_threads(), "loss": loss}))
