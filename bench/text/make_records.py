"""Generate COCO-like training records (coordinate-token JSONL) for the text-pipeline benchmark.

Deterministic for a seed. Each record: one image of a COCO-like size already snapped to multiples
of 32 within 786,432 pixels, 0..60 objects (COCO-like count mix, mean ~7), COCO-80 descriptions,
80% boxes and 20% polygons (3..12 vertices), coordinates as "<|coord_k|>" strings.

usage: python make_records.py OUT.jsonl [--n 100000] [--seed 0]
"""
import argparse
import json
import random

COCO80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
SIZES = [(640, 480), (480, 640), (640, 416), (640, 448), (640, 512), (512, 384), (608, 448),
         (416, 640), (640, 640), (1024, 768), (768, 1024), (960, 640)]


def tok(k):
    return f"<|coord_{k}|>"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w", encoding="utf-8") as f:
        for i in range(a.n):
            w, h = rng.choice(SIZES)
            n = min(60, int(rng.expovariate(1 / 7.3)))
            objs = []
            for _ in range(n):
                desc = rng.choice(COCO80)
                if rng.random() < 0.2:
                    k = rng.randint(3, 12)
                    pts = [tok(rng.randint(0, 999)) for _ in range(2 * k)]
                    objs.append({"desc": desc, "poly": pts})
                else:
                    x1, y1 = rng.randint(0, 950), rng.randint(0, 950)
                    x2, y2 = rng.randint(x1 + 1, min(999, x1 + 400)), rng.randint(y1 + 1, min(999, y1 + 400))
                    objs.append({"desc": desc, "bbox_2d": [tok(x1), tok(y1), tok(x2), tok(y2)]})
            rec = {"images": [f"images/{i:06d}.jpg"], "width": w, "height": h, "objects": objs}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


main()
