"""Python baseline for the text-pipeline benchmark: transformers' apply_chat_template + tokenizer.

For every record: build the same messages as coordexp (system; user = image, then text;
assistant = canonical CoordJSON), render the conversation and the generation prompt with
`tokenizer.apply_chat_template`, expand the image placeholder to (H/32)*(W/32) pads, tokenize both,
and label the tokens after the prompt up to the last <|im_end|> (the rest -100). Prints timings and
a SHA-256 over ids and labels in the same byte layout as the Rust side, so equal checksums prove
equal tokens.

usage: python baseline.py MODEL_DIR RECORDS.jsonl PROMPTS.json [--limit N]
"""
import argparse
import hashlib
import json
import struct
import time

from transformers import AutoTokenizer


def coordjson(objects):
    parts = []
    for o in objects:
        geom_key = "bbox_2d" if "bbox_2d" in o else "poly"
        coords = ", ".join(o[geom_key])
        parts.append(f'{{"desc": {json.dumps(o["desc"], ensure_ascii=False)}, "{geom_key}": [{coords}]}}')
    return '{"objects": [' + ", ".join(parts) + "]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("records")
    ap.add_argument("prompts")
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    prompts = json.load(open(a.prompts, encoding="utf-8"))
    with open(a.records, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    if a.limit:
        records = records[: a.limit]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    pad = "<|image_pad|>"

    t0 = time.perf_counter()
    h = hashlib.sha256()
    tokens = 0
    for r in records:
        n_pad = (r["height"] // 32) * (r["width"] // 32)
        messages = [
            {"role": "system", "content": [{"type": "text", "text": prompts["system"]}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompts["user"]}]},
        ]
        prefix = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": coordjson(r["objects"])}]})
        full = tok.apply_chat_template(messages, tokenize=False)
        prefix = prefix.replace(pad, pad * n_pad)
        full = full.replace(pad, pad * n_pad)
        ids = tok(full, add_special_tokens=False)["input_ids"]
        start = len(tok(prefix, add_special_tokens=False)["input_ids"])
        end = len(ids) - ids[::-1].index(im_end)
        labels = [-100] * start + ids[start:end] + [-100] * (len(ids) - end)
        tokens += len(ids)
        h.update(struct.pack(f"<{len(ids)}I", *ids))
        h.update(struct.pack(f"<{len(labels)}q", *labels))
    elapsed = time.perf_counter() - t0
    print(json.dumps({"records": len(records), "tokens": tokens, "seconds": elapsed,
                      "ids_labels_sha256": h.hexdigest()}))


main()
