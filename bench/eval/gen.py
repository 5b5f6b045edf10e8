"""Generate the COCO-scale evaluation benchmark set (deterministic).

Writes into OUT_DIR:
  gt.json        COCO ground truth: 5,000 images, ~38k annotations, 80 categories (COCO ids 1..90)
  dt.json        COCO results: 100 detections per image (500k), jittered GT boxes + random boxes
  gt.jsonl       the same ground truth as coordexp JSONL records (pixel boxes)
  pred.jsonl     raw model text per image ({"image", "text"}): CoordJSON with coordinate tokens,
                 ~10 objects per image, desc variants (case, plural, synonyms, unknown words),
                 3% of answers truncated mid-record

usage: python gen.py OUT_DIR [--images 5000] [--dets 100] [--seed 0]
"""
import argparse
import json
import math
import os

import numpy as np

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
# The official COCO ids are 1..90 with gaps.
COCO_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
]
SYNONYM_VARIANTS = {"person": "man", "couch": "sofa", "tv": "television", "cell phone": "smartphone"}


def random_boxes(rng, n, w, h):
    """n boxes [x, y, bw, bh] inside a w x h image, with a COCO-like size mix."""
    kind = rng.random(n)
    side = np.where(kind < 0.41, rng.uniform(4, 32, n), np.where(kind < 0.75, rng.uniform(32, 96, n), rng.uniform(96, 450, n)))
    aspect = np.exp(rng.normal(0, 0.5, n))
    bw = np.clip(side * np.sqrt(aspect), 1, w - 1)
    bh = np.clip(side / np.sqrt(aspect), 1, h - 1)
    x = rng.uniform(0, 1, n) * (w - bw)
    y = rng.uniform(0, 1, n) * (h - bh)
    return np.stack([x, y, bw, bh], 1)


def to_bin(v, extent):
    return int(min(999, max(0, round(v / max(1, extent - 1) * 999))))


def desc_variant(rng, name):
    r = rng.random()
    if r < 0.70:
        return name
    if r < 0.80:
        return name.capitalize()
    if r < 0.88:
        return name + "s"
    if r < 0.93 and name in SYNONYM_VARIANTS:
        return SYNONYM_VARIANTS[name]
    if r < 0.97:
        return "object " + str(int(rng.integers(0, 40)))
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)

    images, anns, dets = [], [], []
    gt_lines, pred_lines = [], []
    for i in range(a.images):
        image_id = i + 1
        w, h = int(rng.integers(400, 641)), int(rng.integers(300, 481))
        file_name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "width": w, "height": h, "file_name": file_name})
        n_gt = int(rng.poisson(7.65)) if rng.random() > 0.01 else 0
        gt_boxes = random_boxes(rng, n_gt, w, h)
        gt_cats = rng.integers(0, 80, n_gt)
        objects = []
        for b, c in zip(gt_boxes, gt_cats):
            crowd = int(rng.random() < 0.01)
            x, y, bw, bh = (round(float(v), 2) for v in b)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": COCO_IDS[c],
                         "bbox": [x, y, bw, bh], "area": round(bw * bh * 0.8, 2), "iscrowd": crowd})
            objects.append({"desc": COCO80[c], "bbox_2d": [x, y, min(w, round(x + bw, 2)), min(h, round(y + bh, 2))]})
        gt_lines.append({"images": [file_name], "width": w, "height": h, "objects": objects})

        # Detections: jittered copies of GT boxes (some with a wrong class) + random boxes.
        n_hit = min(a.dets // 2, 3 * n_gt)
        rand = random_boxes(rng, a.dets - n_hit, w, h)
        det_boxes, det_cats = [], []
        for k in range(n_hit):
            g = gt_boxes[k % n_gt]
            jit = rng.normal(0, 0.08, 4) * np.array([g[2], g[3], g[2], g[3]])
            bw, bh = max(1.0, g[2] + jit[2]), max(1.0, g[3] + jit[3])
            det_boxes.append([max(0.0, g[0] + jit[0]), max(0.0, g[1] + jit[1]), bw, bh])
            det_cats.append(gt_cats[k % n_gt] if rng.random() > 0.1 else int(rng.integers(0, 80)))
        det_boxes.extend(rand.tolist())
        det_cats.extend(rng.integers(0, 80, len(rand)).tolist())
        scores = rng.random(len(det_boxes))
        for b, c, s in zip(det_boxes, det_cats, scores):
            dets.append({"image_id": image_id, "category_id": COCO_IDS[int(c)],
                         "bbox": [round(float(v), 2) for v in b], "score": round(float(s), 5)})

        # Model text: ~GT count objects (some missed, some made up), bins, desc variants.
        recs = []
        for b, c in zip(gt_boxes, gt_cats):
            if rng.random() < 0.1:
                continue
            jit = rng.normal(0, 0.05, 4) * np.array([b[2], b[3], b[2], b[3]])
            x1, y1 = b[0] + jit[0], b[1] + jit[1]
            x2, y2 = b[0] + b[2] + jit[2], b[1] + b[3] + jit[3]
            recs.append((desc_variant(rng, COCO80[c]), [to_bin(x1, w), to_bin(y1, h), to_bin(x2, w), to_bin(y2, h)]))
        for b in random_boxes(rng, int(rng.poisson(2)), w, h):
            recs.append((desc_variant(rng, COCO80[int(rng.integers(0, 80))]),
                         [to_bin(b[0], w), to_bin(b[1], h), to_bin(b[0] + b[2], w), to_bin(b[1] + b[3], h)]))
        body = ", ".join(
            '{"desc": %s, "bbox_2d": [%s]}' % (json.dumps(d), ", ".join(f"<|coord_{k}|>" for k in bb))
            for d, bb in recs)
        text = '{"objects": [' + body + "]}<|im_end|>"
        if rng.random() < 0.03 and len(text) > 60:
            text = text[: int(len(text) * rng.uniform(0.5, 0.95))]
        pred_lines.append({"image": file_name, "text": text})

    cats = [{"id": i, "name": n, "supercategory": "thing"} for i, n in zip(COCO_IDS, COCO80)]
    with open(os.path.join(a.out, "gt.json"), "w") as f:
        json.dump({"info": {"description": "coordexp eval benchmark"}, "images": images,
                   "annotations": anns, "categories": cats}, f)
    with open(os.path.join(a.out, "dt.json"), "w") as f:
        json.dump(dets, f)
    with open(os.path.join(a.out, "gt.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in gt_lines)
    with open(os.path.join(a.out, "pred.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in pred_lines)
    print(json.dumps({"images": len(images), "gt": len(anns), "dets": len(dets),
                      "pred_objects_approx": sum(r["text"].count("desc") for r in pred_lines)}))


if __name__ == "__main__":
    main()
