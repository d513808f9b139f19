"""How long one ONNX Runtime run of a bundle's user tower takes alone and beside threads doing
Python work: ORT releases the GIL for each run, and taking it back waits for the switch interval.

    python bench/gil_handoff.py --bundle DIR [--switch-ms 5]

Prints the mean profile-input and tower times over 2,000 users, alone and beside 1 and 3 busy
threads. Data: the bundle's own users.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from embrecall.export.bundle import Bundle
from embrecall.features.profiles import UserProfiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--switch-ms", type=float, default=5.0, help="the GIL switch interval")
    args = ap.parse_args()
    sys.setswitchinterval(args.switch_ms / 1000)
    b = Bundle.load(args.bundle)
    profiles = UserProfiles(b.encoders, b.users)
    users = [str(u) for u in b.users.index[:500]]

    def parts(user: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        inputs = profiles.inputs([user], [profiles.history(user)], [{}])
        t1 = time.perf_counter()
        b.user_tower(inputs)
        return t1 - t0, time.perf_counter() - t1

    for u in users[:50]:
        parts(u)
    stop = threading.Event()

    def busy() -> None:
        doc = json.dumps({"user_id": "u1", "history": [f"i{i}" for i in range(50)], "k": 100})
        while not stop.is_set():
            json.loads(doc)

    print(f"| beside (switch interval {args.switch_ms:g} ms) | inputs µs | tower µs |\n| --- | --- | --- |")
    for threads in (0, 1, 3):
        stop.clear()
        side = [threading.Thread(target=busy) for _ in range(threads)]
        for t in side:
            t.start()
        times = np.array([parts(users[i % len(users)]) for i in range(2000)]) * 1e6
        stop.set()
        for t in side:
            t.join()
        print(f"| {threads} busy threads | {times[:, 0].mean():.0f} | {times[:, 1].mean():.0f} |")


if __name__ == "__main__":
    main()
