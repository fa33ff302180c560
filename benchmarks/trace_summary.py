#!/usr/bin/env python3
"""Summarise a Chrome trace written by `rala bench --trace PREFIX`: self time per op name, largest first.

    python3 benchmarks/trace_summary.py PREFIX.RRSS.224.json [--top 25]

Self time = an event's duration minus the durations of the events nested in it on the same thread, so that
`aten::conv2d` does not count its `aten::mkldnn_convolution` twice. Shares are of the summed self time of all
threads divided by the number of threads that ran ops (≈ wall time of the traced iteration on a busy pool).
"""
import argparse
import collections
import json
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    try:
        with open(args.trace) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"{args.trace}: cannot read a Chrome trace ({e})")
    events = data["traceEvents"] if isinstance(data, dict) else data
    spans = collections.defaultdict(list)  # thread → [(start, end, name)]
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            spans[e.get("tid")].append((float(e["ts"]), float(e["ts"]) + float(e["dur"]), e.get("name", "?")))
    self_time = collections.Counter()
    calls = collections.Counter()
    wall = 0.0
    for tid, ev in spans.items():
        ev.sort(key=lambda s: (s[0], -s[1]))
        stack = []  # [start, end, name, child_time]
        for start, end, name in ev:
            while stack and stack[-1][1] <= start:
                s = stack.pop()
                self_time[s[2]] += (s[1] - s[0]) - s[3]
                if stack:
                    stack[-1][3] += s[1] - s[0]
            stack.append([start, end, name, 0.0])
            calls[name] += 1
        while stack:
            s = stack.pop()
            self_time[s[2]] += (s[1] - s[0]) - s[3]
            if stack:
                stack[-1][3] += s[1] - s[0]
        if ev:
            wall = max(wall, max(e[1] for e in ev) - min(e[0] for e in ev))
    total = sum(self_time.values())
    if total <= 0:
        sys.exit(f"{args.trace}: no complete events")
    print(f"# {args.trace}: {len(spans)} thread(s), span {wall / 1e3:.1f} ms, summed self time {total / 1e3:.1f} ms")
    print("| op | calls | self ms | share |")
    print("|---|---|---|---|")
    for name, t in self_time.most_common(args.top):
        print(f"| {name} | {calls[name]} | {t / 1e3:.1f} | {100 * t / total:.1f} % |")


if __name__ == "__main__":
    main()
