"""What the ECG and echo benchmarks share: a warm page cache, one timed call in a fresh interpreter, and floor
and stage runs alternating over rounds (so that machine load and caching hit both sides alike)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def warm_page_cache(root: Path) -> int:
    """Read every file under ``root`` once, so that the floors and the stage all find them in the page cache."""
    n_bytes = 0
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as stream:  # in 16 MB reads: a full-size labevents.csv.gz is 3 GB
                while block := stream.read(1 << 24):
                    n_bytes += len(block)
    return n_bytes


def measure_in_fresh_process(imports: str, call: str) -> dict:
    """Run ``call`` (an expression returning a JSON-able dict) in a new interpreter after ``imports`` (warmed up
    before the timing inside ``call`` starts); returns its dict with the process's ``peak_rss_mb``."""
    code = (
        "import json, resource, warnings; warnings.simplefilter('ignore');"
        f"{imports};"
        f"r = {call};"
        "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
        "print(json.dumps(r))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternating_rounds(measure: Callable[[str], dict], modes: tuple[str, str], repeats: int) -> dict[str, list[dict]]:
    """``repeats`` rounds of both modes, the order swapped every round: {mode: [result of each round]}."""
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for i in range(repeats):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            runs[mode].append(measure(mode))
    return runs
