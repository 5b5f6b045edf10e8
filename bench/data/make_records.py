#!/usr/bin/env python3
"""Write a large pixel-coordinate JSONL for the `data validate` / `data stats` benchmark.

Records cycle over the images of a synthetic dataset (so every image path exists and every
record states its image's true size) and carry 0-30 random boxes with COCO-like class names,
integer and fractional coordinates, so that parsing and statistics see realistic variety.
Standard library only; deterministic for a seed.
"""

import argparse
import json
import random

CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]


def box(rng, w, h):
    x1 = rng.uniform(0, w - 2)
    y1 = rng.uniform(0, h - 2)
    x2 = rng.uniform(x1 + 1, w)
    y2 = rng.uniform(y1 + 1, h)
    if rng.random() < 0.5:
        return [int(x1), int(y1), int(x2), int(y2)]
    return [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--synth", required=True, help="a JSONL written by `coordexp data synth`")
    ap.add_argument("--out", required=True, help="output JSONL (same directory as --synth)")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with open(args.synth) as f:
        images = [(r["images"][0], r["width"], r["height"]) for r in map(json.loads, f)]
    rng = random.Random(args.seed)
    with open(args.out, "w") as out:
        for i in range(args.records):
            path, w, h = images[i % len(images)]
            objects = [
                {"desc": rng.choice(CLASSES), "bbox_2d": box(rng, w, h)}
                for _ in range(rng.randint(0, 30))
            ]
            out.write(json.dumps({"images": [path], "width": w, "height": h, "objects": objects}))
            out.write("\n")


if __name__ == "__main__":
    main()
