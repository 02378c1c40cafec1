#!/usr/bin/env python3
"""Markdown table of the image build figures a tier wrote (LSTM_BENCH_IMAGE_FIGURES=FILE, tests/image_tiers.py).

usage: scripts/image-figures.py FILE.json

Per image: build seconds, bytes downloaded (pip/apt as printed), image size, bytes its own layers add. Then the sums
with layer sharing (as built: each parent once) and without it (each image building its whole stack alone: the
image's figures plus its parents', computed from the same measurements, since a stack's pins are the same either way)
and their ratio. Figures of a cached image are not cold ones: the table says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def chain(name: str, rows: dict[str, dict], key: str) -> float:
    """The figure of this image plus those of every project image under it."""
    total, row = 0.0, rows[name]
    while True:
        total += row[key]
        parents = [p.split(":")[0].removeprefix("lstm-bench/") for p in row["parents"]]
        if not parents or parents[0] not in rows:
            return total
        row = rows[parents[0]]


def main(path: str) -> int:
    data = json.loads(Path(path).read_text())
    rows = {k: v for k, v in data.items() if "error" not in v}
    print("| image | parent | build s | downloaded MB | image GB | own layers GB | cached |")
    print("|---|---|---|---|---|---|---|")
    for name, r in data.items():
        if "error" in r:
            print(f"| {name} | | build failed: {r['error'].splitlines()[0][:80]} | | | | |")
            continue
        parent = r["parents"][0].split(":")[0].removeprefix("lstm-bench/") if r["parents"] else "base"
        print(f"| {name} | {parent} | {r['build_s']:.0f} | {r['downloaded_bytes'] / 1e6:.0f} | "
              f"{r['size_bytes'] / 1e9:.2f} | {r['own_bytes'] / 1e9:.2f} | {'yes' if r['cached'] else 'no'} |")
    for key, label, scale, unit in (("build_s", "build time", 1, "s"), ("downloaded_bytes", "downloaded", 1e6, "MB"),
                                    ("own_bytes", "disk (layers above the base)", 1e9, "GB")):
        shared = sum(r[key] for r in rows.values())
        alone = sum(chain(n, rows, key) for n in rows)
        ratio = f"{shared / alone:.2f}x" if alone else "n/a"
        print(f"\n{label}: {shared / scale:.1f} {unit} with sharing, {alone / scale:.1f} {unit} if each image "
              f"built its stack alone: {ratio}", end="")
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]) if len(sys.argv) == 2 else 2)
