"""Drive the evaluation benchmark in one run and print a Markdown report.

Each tool runs as its own process, `--reps` times; the table shows the median wall time of the
whole process (interpreter start and imports included for Python tools, process start for ours),
its peak RSS, and for the Python tools the in-process load / evaluate split. Every tool's 12
statistics are compared with pycocotools'.

usage: python run.py --bin target/release/coordexp --data DIR [--reps 3]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd):
    """Run cmd; return (wall seconds, peak RSS MiB, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{err.read().decode()}")
        # ru_maxrss is in KiB on Linux.
        return wall, usage.ru_maxrss / 1024.0, out.read().decode()


def bench(name, cmd, reps, parse):
    walls, rss, last = [], [], None
    for _ in range(reps):
        wall, peak, out = timed(cmd)
        walls.append(wall)
        rss.append(peak)
        last = parse(out)
    return {"name": name, "wall": statistics.median(walls), "walls": walls, "rss": max(rss), **last}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    gt, dt = os.path.join(a.data, "gt.json"), os.path.join(a.data, "dt.json")
    tmp = tempfile.mkdtemp(prefix="coordexp-bench-eval-")
    ours_json = os.path.join(tmp, "ours.json")

    def ours(_out):
        with open(ours_json) as f:
            v = json.load(f)
        keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
        return {"stats": [v[k] for k in keys]}

    rows = [bench("coordexp eval coco", [a.bin, "eval", "coco", "--gt", gt, "--dt", dt, "--json", ours_json], a.reps, ours)]
    for tool in ["hotcoco", "faster_coco_eval", "pycocotools"]:
        rows.append(bench(f"{tool} (Python)", [sys.executable, os.path.join(HERE, "peers.py"), tool, gt, dt],
                          a.reps, json.loads))
    ref = next(r for r in rows if r["name"].startswith("pycocotools"))["stats"]
    hot = next(r for r in rows if r["name"].startswith("hotcoco"))["wall"]
    pyc = next(r for r in rows if r["name"].startswith("pycocotools"))["wall"]

    preds_json = os.path.join(tmp, "preds.json")
    preds = bench("coordexp eval preds", [a.bin, "eval", "preds", "--gt", os.path.join(a.data, "gt.jsonl"),
                                          "--pred", os.path.join(a.data, "pred.jsonl"), "--json", preds_json],
                  a.reps, lambda out: {})
    with open(preds_json) as f:
        rep = json.load(f)

    with open(gt) as f:
        g = json.load(f)
    n_dt = sum(1 for _ in json.load(open(dt)))
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; "
          f"{a.reps} runs per tool, median wall time of the whole process.")
    print(f"Data: {len(g['images'])} images, {len(g['annotations'])} GT annotations, "
          f"{len(g['categories'])} categories, {n_dt} detections (bbox).\n")
    print("| tool | wall (s) | runs (s) | in-process load / eval (s) | peak RSS (MiB) | max abs stat diff vs pycocotools |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        diff = max(abs(x - y) for x, y in zip(r["stats"], ref))
        split = f"{r['load_s']:.2f} / {r['eval_s']:.2f}" if "load_s" in r else "–"
        runs = ", ".join(f"{w:.2f}" for w in r["walls"])
        print(f"| {r['name']} | {r['wall']:.2f} | {runs} | {split} | {r['rss']:.0f} | {diff:.1e} |")
    ours_wall = rows[0]["wall"]
    print(f"\ncoordexp eval coco: {ours_wall / hot:.2f}x the hotcoco binding's wall time (target <= 1.5x), "
          f"{pyc / ours_wall:.1f}x faster than pycocotools (target >= 50x).\n")
    p = rep["parse"]
    print(f"| `coordexp eval preds` from raw text | wall (s) | runs (s) | peak RSS (MiB) |")
    print("|---|---|---|---|")
    runs = ", ".join(f"{w:.2f}" for w in preds["walls"])
    print(f"| {rep['images']['gt']} images, {rep['images']['gt_objects']} GT objects, "
          f"{p['objects_kept']} predicted objects ({p['truncated']} truncated answers) | "
          f"{preds['wall']:.2f} | {runs} | {preds['rss']:.0f} |")
    print(f"\neval preds target: < 2 s for 5,000 images -> {'met' if preds['wall'] < 2 else 'MISSED'}.")


if __name__ == "__main__":
    main()
