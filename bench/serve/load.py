"""Drive a running `coordexp serve` with the `openai` client at a fixed concurrency.

Each of `--clients` threads sends chat completions (one validation image each, greedy, the
learner's own prompts, `max_tokens` from the command line) back to back until `--requests` have
been answered in all; prints one JSON line: requests/s, completion tokens/s, p50/p99 latency.
With `--long-clients L`, L more threads keep sending long requests (`--long-tokens`, end of
sequence ignored) until the others are done: the line's numbers are still the short requests',
which shows whether they wait behind the long ones.
"""

import argparse
import base64
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--val", required=True, help="val.jsonl of the demo")
    ap.add_argument("--system", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per request")
    ap.add_argument("--long-clients", type=int, default=0)
    ap.add_argument("--long-tokens", type=int, default=512)
    a = ap.parse_args()

    import os
    root = os.path.dirname(a.val)
    images = []
    for line in open(a.val):
        rec = json.loads(line)
        with open(os.path.join(root, rec["images"][0]), "rb") as f:
            images.append("data:image/png;base64," + base64.b64encode(f.read()).decode())
    client = OpenAI(base_url=a.url + "/v1", api_key="none", max_retries=0, timeout=a.timeout)
    model = client.models.list().data[0].id
    lock = threading.Lock()
    next_k = [0]
    latencies, tokens = [], [0]

    def worker():
        while True:
            with lock:
                k = next_k[0]
                if k >= a.requests:
                    return
                next_k[0] += 1
            msgs = [{"role": "system", "content": a.system},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": images[k % len(images)]}},
                        {"type": "text", "text": a.user}]}]
            t = time.perf_counter()
            r = client.chat.completions.create(model=model, messages=msgs, temperature=0,
                                               max_tokens=a.max_tokens, seed=k)
            dt = time.perf_counter() - t
            with lock:
                latencies.append(dt)
                tokens[0] += r.usage.completion_tokens

    done = threading.Event()
    long_tokens = [0]

    def long_worker(j):
        msgs = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": images[j % len(images)]}},
            {"type": "text", "text": a.user}]}]
        while not done.is_set():
            r = client.chat.completions.create(model=model, messages=msgs, temperature=0,
                                               max_tokens=a.long_tokens,
                                               extra_body={"ignore_eos": True})
            with lock:
                long_tokens[0] += r.usage.completion_tokens

    with ThreadPoolExecutor(a.clients + a.long_clients) as ex:
        longs = [ex.submit(long_worker, j) for j in range(a.long_clients)]
        if longs:
            time.sleep(0.5)  # the long requests are decoding before the measured ones start
        start = time.perf_counter()
        for f in [ex.submit(worker) for _ in range(a.clients)]:
            f.result()
        wall = time.perf_counter() - start
        done.set()
        for f in longs:
            f.result()
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    print(json.dumps({
        "clients": a.clients, "requests": len(lat), "wall_s": round(wall, 3),
        "requests_per_s": round(len(lat) / wall, 2),
        "completion_tokens_per_s": round(tokens[0] / wall, 1),
        "mean_completion_tokens": round(tokens[0] / len(lat), 1),
        "p50_ms": round(1000 * statistics.median(lat), 1), "p99_ms": round(1000 * p99, 1),
        **({"long_clients": a.long_clients, "long_tokens": long_tokens[0]} if a.long_clients else {}),
    }))


if __name__ == "__main__":
    main()
