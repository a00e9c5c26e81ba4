#!/usr/bin/env python3
"""Predicted against measured, per task, from `plait prove --timings-json` (stdout, a JSON
array of the job's accepted tasks): seconds (the worker's proving seconds, against the one
profile's prediction) and peak memory (the worker's peak RSS, against what the profiles
predicted and what the task was placed by). Prints a Markdown table, then per phase the
range of the memory errors and the predicted and measured seconds with the range of the time
errors.

    plait prove … --timings-json > timings.json && scripts/per-task-table.py < timings.json

With `--predicted FILE` (`plait plan … --tasks-json FILE`), the predictions are that file's
instead of the job's own: a changed cost model set beside a job measured before it, without
proving it again. "placed by" is then left blank (it was the job's own).
"""
import argparse
import json
import sys

GIB = float(1 << 30)


def error(predicted, measured):
    """The prediction's error against the measurement, as a signed percentage."""
    if not predicted or not measured:
        return ""
    return f"{(predicted / measured - 1) * 100:+.1f}%"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predicted", metavar="FILE",
                        help="per-task predictions from `plait plan --tasks-json`")
    args = parser.parse_args()
    text = sys.stdin.read()
    # `plait prove` prints the array last; anything before it is not JSON.
    timings = json.loads(text[text.index("["):])
    if args.predicted:
        with open(args.predicted) as f:
            predicted = {p["task"]: p for p in json.load(f)}
        for t in timings:
            p = predicted.get(t["task"])
            if p is None or p["phase"] != t["phase"]:
                sys.exit(f"task {t['task']} ({t['phase']}) is not in {args.predicted} as such: "
                         "not the same job, height or tree")
            t["predicted_seconds"] = p["seconds"]
            t["predicted_peak_bytes"] = p["peak_bytes"]
            t["placed_by_bytes"] = None
    order = {"segments": 0, "leaf": 1, "internal-for-leaf": 2, "wrap": 9}
    timings.sort(key=lambda t: (order.get(t["phase"], 5), t["phase"], t["task"]))
    print("| task | phase | predicted s | measured s | error | predicted GiB "
          "| placed by GiB | measured GiB | error |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = {}
    # Per phase: tasks, predicted and measured seconds (summed over the tasks that have both),
    # and the range of the per-task time errors.
    phase_seconds = {}
    for t in timings:
        meta = t["meta"]
        seconds = meta.get("proving_seconds", 0.0)
        peak = meta.get("process_peak_rss_bytes", 0)
        predicted_s = t.get("predicted_seconds")
        predicted_b = t.get("predicted_peak_bytes", 0)
        placed = t.get("placed_by_bytes", 0)
        cells = [str(t["task"]), t["phase"]]
        if predicted_s is None:
            cells += ["", f"{seconds:.1f}", ""]
        else:
            cells += [f"{predicted_s:.1f}", f"{seconds:.1f}", error(predicted_s, seconds)]
            if seconds:
                n, p_sum, m_sum, low, high = phase_seconds.get(
                    t["phase"], (0, 0.0, 0.0, float("inf"), float("-inf")))
                e = predicted_s / seconds - 1
                phase_seconds[t["phase"]] = (n + 1, p_sum + predicted_s, m_sum + seconds,
                                             min(low, e), max(high, e))
        placed = "" if placed is None else f"{placed / GIB:.2f}"
        cells += [f"{predicted_b / GIB:.2f}", placed, f"{peak / GIB:.2f}",
                  error(predicted_b, peak)]
        print("| " + " | ".join(cells) + " |")
        if predicted_b and peak:
            e = predicted_b / peak - 1
            low, high = worst.get(t["phase"], (e, e))
            worst[t["phase"]] = (min(low, e), max(high, e))
    for phase, (low, high) in worst.items():
        print(f"\n{phase}: peak predicted {low * 100:+.1f}% to {high * 100:+.1f}%", end="")
    print()
    for phase, (n, p_sum, m_sum, low, high) in phase_seconds.items():
        print(f"\n{phase} ({n}): {p_sum:.1f} s predicted, {m_sum:.1f} s measured "
              f"({error(p_sum, m_sum)}); per task {low * 100:+.1f}% to {high * 100:+.1f}%",
              end="")
    print()


if __name__ == "__main__":
    main()
