"""Summarise a pytest-benchmark JSON: p50 per group, engine/peer ratios, achieved GFLOP/s."""

from __future__ import annotations

import json
import platform
import sys
from collections import defaultdict
from datetime import date


def main(path: str) -> None:
    data = json.load(open(path, encoding="utf-8"))
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    matmul_gflops = None
    for b in data["benchmarks"]:
        info, stats = b["extra_info"], b["stats"]
        p50 = stats["median"]
        if b["group"] == "matmul":
            matmul_gflops = info["flops_per_query"] / p50 / 1e9
            continue
        groups[b["group"]][info.get("impl", b["name"])] = {"p50": p50, "info": info, "stats": stats}
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", platform.processor())
    print(f"{date.today()} · {cpu} · {data['machine_info'].get('cpu', {}).get('count', '?')} cores")
    if matmul_gflops:
        print(f"numpy float32 matmul (same run): {matmul_gflops:.0f} GFLOP/s")
    print("| workload | engine p50 ms | peer p50 ms | speed-up | engine GFLOP/s | peer GFLOP/s | padded tokens: engine / peer / real |")
    print("|---|---|---|---|---|---|---|")
    for group, impls in sorted(groups.items()):
        eng, peer = impls.get("engine"), impls.get("python-peer")
        if not eng or not peer:
            continue
        flops = eng["info"]["flops_per_query"]
        pad = eng["info"]
        print(
            f"| {group} | {eng['p50'] * 1e3:.0f} | {peer['p50'] * 1e3:.0f} | {peer['p50'] / eng['p50']:.2f}× "
            f"| {flops / eng['p50'] / 1e9:.1f} | {flops / peer['p50'] / 1e9:.1f} "
            f"| {pad['padded_tokens']:.0f} / {pad['pad_to_longest_tokens']:.0f} / {pad['real_tokens']:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
