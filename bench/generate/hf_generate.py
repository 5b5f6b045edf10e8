"""Generation throughput of transformers' Qwen3-VL `generate` with the same model shape, prompts
and lengths as crates/model/examples/generate_bench.rs (see README.md). One JSON line per round."""
import argparse
import json
import time

import numpy as np
import torch
from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--model", default="bench")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--new-tokens", type=int, default=64)
ap.add_argument("--rounds", type=int, default=1)
a = ap.parse_args()

cfg_json = json.load(open(a.config))
cfg = Qwen3VLConfig(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "model_type")})
torch.manual_seed(0)
model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()
rgb = (np.arange(128 * 128 * 3) * 131 % 251).astype(np.uint8).reshape(128, 128, 3)
proc = Qwen2VLImageProcessor(do_resize=False, patch_size=16, merge_size=2, temporal_patch_size=2,
                             image_mean=[0.5] * 3, image_std=[0.5] * 3)
px = proc(images=[rgb] * a.batch, return_tensors="pt")


def ids_of(row):
    ids = [10 + (k * 37 + row) % 500 for k in range(8)]
    ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * 16 + [cfg.vision_end_token_id]
    ids += [10 + (k * 7919 + row * 31) % 1000 for k in range(40)]
    return ids


input_ids = torch.tensor([ids_of(r) for r in range(a.batch)])
mask = torch.ones_like(input_ids)


def run():
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=px["pixel_values"],
                             image_grid_thw=px["image_grid_thw"], max_new_tokens=a.new_tokens,
                             min_new_tokens=a.new_tokens, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    secs = time.perf_counter() - t0
    made = (out.shape[1] - input_ids.shape[1]) * a.batch
    assert made == a.batch * a.new_tokens, (made, a.batch * a.new_tokens)
    return secs


run()  # warm-up
for _ in range(a.rounds):
    s = run()
    print(json.dumps({"impl": "transformers", "model": a.model, "batch": a.batch, "new_tokens": a.new_tokens,
                      "prompt_tokens": input_ids.shape[1], "seconds": s,
                      "tokens_per_s": a.batch * a.new_tokens / s, "threads": torch.get_num_threads()}))
