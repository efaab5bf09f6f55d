#!/usr/bin/env python3
"""Instruction ratios of the layer to the bare route, from gungraun summaries.

Run after `cargo bench -p tower-singleflight-benches --bench instructions -- --save-summary=json`:

    python3 bench/instructions.py            # print the ratios
    python3 bench/instructions.py --check    # also fail on a regression
    python3 bench/instructions.py --update   # write them as the new baseline

A ratio regresses when it exceeds its value in bench/baseline.json by more
than 3%. Ratios, not raw counts, are compared: the bare route is measured in
the same run, so a toolchain or dependency change moves both sides.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASELINE = ROOT / "bench" / "baseline.json"
TOLERANCE = 0.03
# Layers that are not this crate's, measured for scale: printed, never gated.
REFERENCES = {"identity_layer", "noop_from_fn"}


def summaries():
    """Instruction counts by benchmark id, from the newest gungraun run."""
    target = pathlib.Path(
        __import__("os").environ.get("CARGO_TARGET_DIR", ROOT / "target")
    )
    home = target / "gungraun" / "tower-singleflight-benches" / "instructions"
    counts = {}
    for path in sorted(home.glob("*/*/summary.json")):
        summary = json.loads(path.read_text())
        metrics = summary["profiles"][0]["data"]["total"]["metrics"]
        counts[summary["id"]] = int(metrics["Ir"]["values"]["new"])
    if "bare" not in counts:
        sys.exit(f"no gungraun summaries under {home}: run the benchmark first")
    return counts


def base_of(name):
    """The bare route a case is measured against: `bare_browser` for the
    cases sent with a browser's headers, else `bare`."""
    return "bare_browser" if name.endswith("_browser") else "bare"


def main():
    counts = summaries()
    bases = {name for name in counts if name.startswith("bare")}
    ratios = {
        name: round(count / counts[base_of(name)], 4)
        for name, count in counts.items()
        if name not in bases
    }
    print(f"{'benchmark':<28} {'instructions':>12} {'ratio to its bare':>18}")
    for name in sorted(bases):
        print(f"{name:<28} {counts[name]:>12}")
    for name, ratio in sorted(ratios.items()):
        print(f"{name:<28} {counts[name]:>12} {ratio:>18.3f}")

    if "--update" in sys.argv:
        gated = {name: ratio for name, ratio in ratios.items() if name not in REFERENCES}
        references = {name: ratio for name, ratio in ratios.items() if name in REFERENCES}
        baseline = {"ratios": gated, "references": references}
        BASELINE.write_text(json.dumps(baseline, indent=2, sort_keys=True) + "\n")
        print(f"baseline written to {BASELINE.relative_to(ROOT)}")
        return
    if "--check" in sys.argv:
        baseline = json.loads(BASELINE.read_text())["ratios"]
        failures = [
            f"{name}: {ratios[name]:.3f} > {expected:.3f} + 3%"
            for name, expected in baseline.items()
            if name in ratios and ratios[name] > expected * (1 + TOLERANCE)
        ]
        missing = [name for name in baseline if name not in ratios]
        for line in failures + [f"{name}: not measured" for name in missing]:
            print(f"REGRESSION {line}")
        if failures or missing:
            sys.exit(1)
        print(f"{len(baseline)} ratios within 3% of bench/baseline.json")


if __name__ == "__main__":
    main()
