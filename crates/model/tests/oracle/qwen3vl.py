"""Live transformers oracle for the coordexp-model parity tests.

Reads one JSON request on stdin, prints one JSON answer. Modes:
  build     -- build Qwen3VLForConditionalGeneration from `config` with `seed`, save it to
               `dir`, and for each case write `dir/<case>.safetensors` with the inputs (token ids,
               raw u8 images, pixel patches, grids, rope position ids) and the outputs (logits,
               and for `grad` cases the gradient of sum(logits * w) w.r.t. every parameter).
  logits    -- load the model in `dir` (in bf16 when `dtype` is "bf16") and write the f32
               logits of the case file `case` to `out`.
  generate  -- load the model in `dir`, greedy-generate `max_new_tokens` for the cases `cases`
               batched with left padding, and return the new token ids.
"""
import json
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

torch.set_num_threads(max(1, torch.get_num_threads()))
req = json.load(sys.stdin)


def processor():
    return Qwen2VLImageProcessor(do_resize=False, patch_size=16, merge_size=2, temporal_patch_size=2,
                                 image_mean=[0.5] * 3, image_std=[0.5] * 3)


def build_case(model, cfg, spec, rng):
    """Token ids + images for one sample: `parts` lists text lengths and {"image": [h, w]}."""
    vocab = cfg.text_config.vocab_size
    special = {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id}
    ordinary = np.array([t for t in range(vocab) if t not in special])
    ids, types, images = [], [], []
    for part in spec["parts"]:
        if isinstance(part, int):
            ids += rng.choice(ordinary, part).tolist()
            types += [0] * part
        else:
            h, w = part["image"]
            images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            n = (h // 32) * (w // 32)
            ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id]
            types += [0] + [1] * n + [0]
    out = {"input_ids": torch.tensor([ids]), "mm_token_type_ids": torch.tensor([types], dtype=torch.int32)}
    if images:
        px = processor()(images=images, return_tensors="pt")
        out["pixel_values"] = px["pixel_values"].float()
        out["image_grid_thw"] = px["image_grid_thw"]
        for i, img in enumerate(images):
            out[f"image_{i}"] = torch.from_numpy(img).contiguous()
    pos, _ = model.model.get_rope_index(
        out["input_ids"], out["mm_token_type_ids"], image_grid_thw=out.get("image_grid_thw"))
    out["position_ids"] = pos
    return out


def forward(model, case):
    return model(input_ids=case["input_ids"], position_ids=case["position_ids"],
                 pixel_values=case.get("pixel_values"), image_grid_thw=case.get("image_grid_thw"),
                 mm_token_type_ids=case["mm_token_type_ids"]).logits


def load(d, dtype=torch.float32):
    return Qwen3VLForConditionalGeneration.from_pretrained(d, dtype=dtype, attn_implementation="sdpa").eval()


mode = req["mode"]
if mode == "build":
    torch.manual_seed(req["seed"])
    cfg = Qwen3VLConfig(**req["config"])
    model = Qwen3VLForConditionalGeneration(cfg).float().eval()
    if req.get("init_std"):
        with torch.no_grad():
            for _, p in model.named_parameters():
                if p.dim() > 1:
                    p.normal_(0.0, req["init_std"])
    model.save_pretrained(req["dir"])
    rng = np.random.default_rng(req["seed"])
    for spec in req["cases"]:
        case = build_case(model, cfg, spec, rng)
        model.zero_grad(set_to_none=True)
        logits = forward(model, case)
        case["logits"] = logits.detach()
        if spec.get("grad"):
            w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(7))
            (logits * w).sum().backward()
            case["loss_weight"] = w
            for name, p in model.named_parameters():
                case["grad." + name] = p.grad.detach().clone()
        save_file({k: v.contiguous() for k, v in case.items()}, f"{req['dir']}/{spec['name']}.safetensors")
    print(json.dumps({"ok": True}))
elif mode == "logits":
    bf16 = req.get("dtype") == "bf16"
    model = load(req["dir"], torch.bfloat16 if bf16 else torch.float32)
    case = load_file(req["case"])
    if bf16:
        case = {k: v.to(torch.bfloat16) if k == "pixel_values" else v for k, v in case.items()}
    with torch.no_grad():
        save_file({"logits": forward(model, case).float().contiguous()}, req["out"])
    print(json.dumps({"ok": True}))
elif mode == "generate":
    model = load(req["dir"])
    cases = [load_file(c) for c in req["cases"]]
    L = max(c["input_ids"].shape[1] for c in cases)
    pad = req["pad_id"]
    ids, mask, types = [], [], []
    for c in cases:
        n = c["input_ids"].shape[1]
        ids.append(torch.cat([torch.full((1, L - n), pad), c["input_ids"]], 1))
        mask.append(torch.cat([torch.zeros(1, L - n, dtype=torch.long), torch.ones(1, n, dtype=torch.long)], 1))
        types.append(torch.cat([torch.zeros(1, L - n, dtype=torch.int32), c["mm_token_type_ids"]], 1))
    kw = {}
    px = [c["pixel_values"] for c in cases if "pixel_values" in c]
    if px:
        kw["pixel_values"] = torch.cat(px)
        kw["image_grid_thw"] = torch.cat([c["image_grid_thw"] for c in cases if "image_grid_thw" in c])
    with torch.no_grad():
        out = model.generate(input_ids=torch.cat(ids), attention_mask=torch.cat(mask),
                             mm_token_type_ids=torch.cat(types), max_new_tokens=req["max_new_tokens"],
                             min_new_tokens=req["max_new_tokens"], do_sample=False, pad_token_id=pad,
                             eos_token_id=None, **kw)
    print(json.dumps({"tokens": out[:, L:].tolist()}))
elif mode == "tokenizer":
    # A byte-level BPE tokenizer with the Qwen special tokens, saved the way transformers does.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok.add_special_tokens(specials)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>").save_pretrained(req["dir"])
    print(json.dumps({"len": tok.get_vocab_size()}))
elif mode == "tokens":
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    raw = Tokenizer.from_file(req["dir"] + "/tokenizer.json").encode(req["text"]).ids
    auto = AutoTokenizer.from_pretrained(req["dir"])
    print(json.dumps({"raw": raw, "auto": auto(req["text"])["input_ids"], "len": len(auto),
                      "skip_special": auto.decode(raw, skip_special_tokens=True)}))
else:
    raise SystemExit(f"unknown mode {mode}")
