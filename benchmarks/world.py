"""Time and peak memory to generate (and save) the default built-in world.

    python benchmarks/world.py                 # default world, 3 fresh processes
    python benchmarks/world.py --scale 0.1 --repeats 1

Each repetition runs in a fresh Python process so that its peak resident memory
(``ru_maxrss``) is the generation's own; the memory right after the imports is reported
apart. Reports the median over repetitions and whether every repetition wrote
byte-identical files. Results go to stdout and benchmarks/out/world.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "world.json"


def child(scale: float) -> None:
    """One generation in this process; prints a JSON line of figures."""
    from recscope.sim import World, WorldConfig

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = WorldConfig() if scale == 1.0 else WorldConfig().scaled(scale)
    t0 = time.perf_counter()
    world = World.generate(cfg)
    t_gen = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        world.save(Path(tmp) / "world")
        t_save = time.perf_counter() - t1
        digest = hashlib.sha256()
        size = 0
        for p in sorted((Path(tmp) / "world").iterdir()):
            data = p.read_bytes()
            size += len(data)
            digest.update(p.name.encode() + data)
    d = world.describe()
    print(json.dumps({
        "generate_s": t_gen, "save_s": t_save, **{f"{k}": v for k, v in world.timings.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mb": rss_imports, "files_mb": size / 2**20,
        "sha256": digest.hexdigest(), "impressions": d["events"]["impression"],
        "rows": d["n_rows"], "users": d["n_users"], "items": d["n_items"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.scale)
        return
    runs = []
    for r in range(args.repeats):
        proc = subprocess.run([sys.executable, __file__, "--child", "--scale", str(args.scale)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"run {r + 1}: generate {runs[-1]['generate_s']:.1f} s, save "
              f"{runs[-1]['save_s']:.1f} s, peak RSS {runs[-1]['peak_rss_mb']:.0f} MB")

    def med(key: str) -> float:
        return statistics.median(x[key] for x in runs)

    result = {
        "command": f"python benchmarks/world.py --scale {args.scale} --repeats {args.repeats}",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "scale": args.scale, "repeats": args.repeats,
        "users": runs[0]["users"], "items": runs[0]["items"],
        "impressions": runs[0]["impressions"], "log_rows": runs[0]["rows"],
        "generate_s_median": med("generate_s"), "truth_s_median": med("truth_s"),
        "log_s_median": med("log_s"), "save_s_median": med("save_s"),
        "impressions_per_s": runs[0]["impressions"] / med("generate_s"),
        "peak_rss_mb_median": med("peak_rss_mb"),
        "rss_after_imports_mb_median": med("rss_after_imports_mb"),
        "files_mb": runs[0]["files_mb"],
        "byte_identical_across_runs": len({x["sha256"] for x in runs}) == 1,
        "runs": runs,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
