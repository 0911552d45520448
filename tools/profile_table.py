#!/usr/bin/env python3
"""Summarise a Chrome trace written by sasrec_ddp's `output.profile` into a table.

    python3 tools/profile_table.py TRACE.json [--top 25]

Self time per op (its own duration minus the ops nested in it, on the same
thread), summed over the profiled steps, with the share of the total and the
time per step. The `phase::*` scopes (sample, forward, backward, reduce, step)
are listed apart with their inclusive times.
"""
import argparse, collections, json, sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, default=50, help="steps the trace covers (sasrec_ddp profiles 50)")
    a = ap.parse_args()
    with open(a.trace) as f:
        text = f.read().strip()
    if text.endswith(","):
        text = text[:-1] + "]"
    events = json.loads(text)
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    spans = [e for e in events if e.get("ph") == "X"]
    by_thread = collections.defaultdict(list)
    for e in spans:
        by_thread[e.get("tid")].append(e)
    self_us, calls, phases = collections.Counter(), collections.Counter(), collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [event, child time]
        def close(item):
            e, child = item
            if e["name"].startswith("phase::"):
                phases[e["name"]] += e["dur"]
            else:
                self_us[e["name"]] += e["dur"] - child
                calls[e["name"]] += 1
            if stack and not e["name"].startswith("phase::"):
                stack[-1][1] += e["dur"]
        for e in evs:
            while stack and stack[-1][0]["ts"] + stack[-1][0]["dur"] <= e["ts"]:
                close(stack.pop())
            stack.append([e, 0.0])
        while stack:
            close(stack.pop())
    total = sum(self_us.values())
    if total == 0:
        sys.exit(f"{a.trace}: no op events")
    print(f"phases (inclusive, ms/step over {a.steps} steps): " +
          ", ".join(f"{k[7:]} {v / 1000 / a.steps:.2f}" for k, v in sorted(phases.items(), key=lambda kv: -kv[1])))
    print(f"ops: {total / 1000 / a.steps:.2f} ms/step of self time in {sum(calls.values()) / a.steps:.0f} op calls/step\n")
    print("| op | calls/step | ms/step | share |")
    print("|---|---|---|---|")
    for name, us in self_us.most_common(a.top):
        print(f"| {name} | {calls[name] / a.steps:.1f} | {us / 1000 / a.steps:.3f} | {100 * us / total:.1f}% |")


if __name__ == "__main__":
    main()
