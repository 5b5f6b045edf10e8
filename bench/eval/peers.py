"""Run one Python COCO evaluator on GT/DT files and print its stats and phase times as JSON.

usage: python peers.py {pycocotools|faster_coco_eval|hotcoco} GT.json DT.json
"""
import contextlib
import io
import json
import sys
import time

tool, gt_path, dt_path = sys.argv[1:4]
t0 = time.perf_counter()
sink = io.StringIO()
with contextlib.redirect_stdout(sink):
    if tool == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    elif tool == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    elif tool == "hotcoco":
        from hotcoco import COCO
        from hotcoco import COCOeval as Eval
    else:
        sys.exit(f"unknown tool {tool}")
    t_import = time.perf_counter()
    gt = COCO(gt_path)
    dt = gt.loadRes(dt_path) if hasattr(gt, "loadRes") else gt.load_res(dt_path)
    t_load = time.perf_counter()
    ev = Eval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    t_eval = time.perf_counter()
print(json.dumps({
    "stats": [float(s) for s in ev.stats],
    "import_s": t_import - t0,
    "load_s": t_load - t_import,
    "eval_s": t_eval - t_load,
}))
