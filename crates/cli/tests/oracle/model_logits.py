"""Live transformers oracle for `coordexp model logits`: recomputes the logits of the written file
with Qwen3VLForConditionalGeneration on the same model directory, from the record's image file
(patchified by transformers' own image processor) and the written input ids (positions from
transformers' own get_rope_index). Prints the differences as one JSON object."""
import json
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import Qwen2VLImageProcessor, Qwen3VLForConditionalGeneration

req = json.load(sys.stdin)
ours = load_file(req["logits"])
pre = json.load(open(req["model"] + "/preprocessor_config.json"))
proc = Qwen2VLImageProcessor(do_resize=False, patch_size=pre["patch_size"], merge_size=pre["merge_size"],
                             temporal_patch_size=pre["temporal_patch_size"], image_mean=pre["image_mean"],
                             image_std=pre["image_std"])
px = proc(images=[np.array(Image.open(req["image"]).convert("RGB"))], return_tensors="pt")
model = Qwen3VLForConditionalGeneration.from_pretrained(req["model"], dtype=torch.float32,
                                                        attn_implementation="sdpa").eval()
ids = ours["input_ids"].view(1, -1)
types = (ids == model.config.image_token_id).int()
pos, _ = model.model.get_rope_index(ids, types, image_grid_thw=px["image_grid_thw"])
with torch.no_grad():
    logits = model(input_ids=ids, position_ids=pos, pixel_values=px["pixel_values"].float(),
                   image_grid_thw=px["image_grid_thw"], mm_token_type_ids=types).logits[0]
print(json.dumps({
    "pixels": (px["pixel_values"].float() - ours["pixel_values"]).abs().max().item(),
    "grid": px["image_grid_thw"].tolist() == ours["image_grid_thw"].tolist(),
    "positions": bool((pos[:, 0] == ours["position_ids"][1:]).all().item()),
    "logits": (logits - ours["logits"]).abs().max().item(),
    "scale": ours["logits"].abs().max().item(),
    "shape": list(ours["logits"].shape),
    "supervised": int((ours["labels"] != -100).sum().item()),
}))
