#!/usr/bin/env python3
"""Python baseline for `data validate --images`: the loop a Python validator runs to check image
existence and true size with Pillow (header only: `Image.open(...).size`), one process.

Not the reference tool itself; it does strictly less work than `coordexp data validate --images`
(no structural record checks), so it bounds the Python side from below.
"""

import json
import os
import sys
import time

from PIL import Image


def main(path):
    base = os.path.dirname(os.path.abspath(path))
    t0, c0 = time.perf_counter(), time.process_time()
    records = mismatched = 0
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            records += 1
            for image in r["images"]:
                with Image.open(os.path.join(base, image)) as im:
                    if im.size != (r["width"], r["height"]):
                        mismatched += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{wall:7.2f}s wall {cpu:7.2f}s cpu  ({records} records, {mismatched} mismatched)")


if __name__ == "__main__":
    main(sys.argv[1])
