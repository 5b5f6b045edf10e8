"""Live peft oracle for the coordexp adapter tests (LoRA and DoRA on transformers' Qwen3-VL).

Reads one JSON request on stdin, prints one JSON answer. Modes:
  build   -- load the base model in `base`, wrap it with peft (`r`, `alpha`, `targets`,
             `dora`, optional `modules_to_save`) with random non-trivial adapter weights and
             saved-module weights moved away from the base's (seeded), save the adapter to
             `adapter`, and write to `out` the logits of the case file `case` and the gradient
             of sum(logits * w) (w: the case's `loss_weight`) w.r.t. every adapter tensor, named
             as coordexp names them (`<module>.lora_A.weight`, `<module>.lora_magnitude_vector`,
             a saved module's parameters under their own names).
  logits  -- the logits of `case` from the base in `base`, with the adapter directory `adapter`
             loaded by `PeftModel.from_pretrained` when given, written to `out`.
"""
import json
import re
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import Qwen3VLForConditionalGeneration

req = json.load(sys.stdin)


def load(d):
    return Qwen3VLForConditionalGeneration.from_pretrained(
        d, dtype=torch.float32, attn_implementation="sdpa").eval()


def forward(model, case):
    return model(input_ids=case["input_ids"], position_ids=case["position_ids"],
                 pixel_values=case.get("pixel_values"), image_grid_thw=case.get("image_grid_thw"),
                 mm_token_type_ids=case["mm_token_type_ids"]).logits


def ours(name):
    """peft's parameter name -> coordexp's adapter tensor name."""
    name = name.removeprefix("base_model.model.").replace(".default", "")
    name = name.replace(".modules_to_save", "")
    return re.sub(r"\.lora_magnitude_vector\.weight$", ".lora_magnitude_vector", name)


mode = req["mode"]
case = load_file(req["case"])
if mode == "build":
    base = load(req["base"])
    cfg = LoraConfig(r=req["r"], lora_alpha=req["alpha"], lora_dropout=0.0,
                     target_modules=req["targets"], use_dora=req["dora"], init_lora_weights=False,
                     modules_to_save=req.get("modules_to_save"))
    torch.manual_seed(req["seed"])
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(req["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif ".modules_to_save." in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(req["adapter"])
    model.zero_grad(set_to_none=True)
    logits = forward(model, case)
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(7))
    (logits * w).sum().backward()
    out = {"logits": logits.detach().contiguous(), "loss_weight": w}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out["grad." + ours(name)] = p.grad.detach().clone().contiguous()
    save_file(out, req["out"])
    print(json.dumps({"ok": True, "adapted": sum(1 for k in out if k.endswith("lora_A.weight"))}))
elif mode == "logits":
    model = load(req["base"])
    if req.get("adapter"):
        model = PeftModel.from_pretrained(model, req["adapter"]).eval()
    with torch.no_grad():
        save_file({"logits": forward(model, case).contiguous()}, req["out"])
    print(json.dumps({"ok": True}))
else:
    raise SystemExit(f"unknown mode {mode}")
