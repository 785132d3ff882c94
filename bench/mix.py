"""Mixer throughput (MB/s) against raw `tar` writing the same bytes, and peak memory vs shard count.

    python bench/mix.py [--scale 20] [--workdir /tmp/crawlmix-bench-mix]

1. Generates the media sample at --scale (x the bundled sample; 20 => ~55 MB of sources) and mixes all
   of it (a vision-style stage over every source, one epoch) into shards of 1,000 samples.
2. Baseline: the same members, unpacked to one folder per shard, packed by GNU `tar -cf` (files are in
   the page cache for both sides). The mixer's figure is end to end: reading, indexing and planning the
   sources, then writing the shards. The two sides take turns (mix, tar, mix, tar, ...) so both see the
   same machine load; the best of --repeat runs of each is kept, and the CPU seconds of each are shown.
3. Memory: the same mix with 20, 200 and 2,000 samples per shard, each in a fresh process (peak RSS).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SOURCES = [("ocr", "image", "ocr.tar"), ("charts", "image", "charts.tar"), ("tables", "image", "tables.tar"),
           ("captions", "image", "photos.tar"), ("multi", "multi-image", "multi-image.tar"),
           ("clips", "video", "video.tar"), ("textbook", "text", "textbook.jsonl")]


def mixture(media: Path, per_shard: int) -> dict:
    man = json.loads((media / "MEDIA_MANIFEST.json").read_text())["files"]
    counts = {name: man[f]["samples"] for name, _, f in SOURCES}
    total = sum(counts.values())
    return {"name": "bench", "seed": 0, "stages": [{
        "name": "all", "budget": {"samples": total}, "shards": {"max_samples": per_shard},
        "sources": [{"name": n, "modality": m, "path": str(media / f), "weight": counts[n] / total, "max_epochs": 1.01}
                    for n, m, f in SOURCES]}]}


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_mix(media: Path, out: Path, per_shard: int) -> dict:
    from crawlmix.mix.job import run
    from crawlmix.mix.config import parse_mixture

    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    res = run(parse_mixture(mixture(media, per_shard)), out, ROOT, progress=False)[0]
    wall, cpu = time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - c0
    return {"bytes": res["bytes"], "wall_s": wall, "cpu_s": cpu, "write_s": res["wall_s"],
            "shards": res["lock"]["shards"], "samples": res["lock"]["samples"],
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def unpack(shards: list[Path], work: Path) -> list[Path]:
    """Each shard unpacked to a folder, with its member order (untimed)."""
    unpacked = work / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    dirs = []
    for p in shards:
        d = unpacked / p.stem
        d.mkdir(parents=True)
        with tarfile.open(p) as tf:
            names = tf.getnames()
            tf.extractall(d, filter="data")
        (unpacked / f"{p.stem}.order").write_text("\n".join(names) + "\n")
        dirs.append(d)
    subprocess.run(["sync"], check=False)
    return dirs


def tar_baseline(dirs: list[Path], work: Path) -> tuple[float, int, float]:
    """GNU tar packing each unpacked shard back into a new tar: (seconds, bytes, CPU seconds)."""
    for d in dirs:
        (work / f"{d.name}.gnu.tar").unlink(missing_ok=True)
    total, t0, c0 = 0, time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
    for d in dirs:
        out = work / f"{d.name}.gnu.tar"
        subprocess.run(["tar", "-cf", str(out), "-C", str(d), "-T", str(d.parent / f"{d.name}.order")], check=True)
        total += out.stat().st_size
    return time.perf_counter() - t0, total, _cpu(resource.RUSAGE_CHILDREN) - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/mix.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=20, help="media sample scale (default 20, ~55 MB)")
    ap.add_argument("--workdir", default="/tmp/crawlmix-bench-mix", help="scratch folder (deleted and rebuilt)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per side, taking turns, best kept (default 5)")
    ap.add_argument("--child", nargs=2, metavar=("MEDIA", "PER_SHARD"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    if a.child:  # one mix in a fresh process, for its peak RSS
        r = run_mix(Path(a.child[0]), work / f"mem-{a.child[1]}", int(a.child[1]))
        print(json.dumps(r))
        return 0

    from crawlmix.samples.media_sample import write_media_sample

    shutil.rmtree(work, ignore_errors=True)
    media = work / "media"
    t0 = time.perf_counter()
    write_media_sample(media, seed=0, scale=a.scale)
    src_bytes = sum(p.stat().st_size for p in media.iterdir())
    print(f"sources: {src_bytes / 1e6:.1f} MB at scale {a.scale:g} (generated in {time.perf_counter() - t0:.1f}s)")

    run_mix(media, work / "mix", 1000)  # the shards the baseline packs again (and a warm-up)
    dirs = unpack(sorted((work / "mix" / "all").glob("shard-*.tar")), work)
    best = write = tar = None
    for _ in range(a.repeat):  # taking turns: both sides see the same load
        r = run_mix(media, work / "mix", 1000)
        best = r if best is None or r["wall_s"] < best["wall_s"] else best
        write = r if write is None or r["write_s"] < write["write_s"] else write
        t = tar_baseline(dirs, work)
        tar = t if tar is None or t[0] < tar[0] else tar
    tar_s, tar_bytes, tar_cpu = tar
    mb = best["bytes"] / 1e6
    mix_mbps, tar_mbps = mb / best["wall_s"], tar_bytes / 1e6 / tar_s
    print(f"output: {best['samples']:,} samples, {mb:.1f} MB in {best['shards']} shards")
    print(f"{'writer (best of ' + str(a.repeat) + ')':<44}{'seconds':>9}{'MB/s':>9}{'CPU s':>8}")
    print(f"{'crawlmix mix (read + index + plan + write)':<44}{best['wall_s']:>9.2f}{mix_mbps:>9.1f}"
          f"{best['cpu_s']:>8.2f}")
    print(f"{'crawlmix mix, shard writing only':<44}{write['write_s']:>9.2f}{mb / write['write_s']:>9.1f}")
    print(f"{'GNU tar -cf, same members from files':<44}{tar_s:>9.2f}{tar_mbps:>9.1f}{tar_cpu:>8.2f}")
    print(f"ratio mix / tar: {mix_mbps / tar_mbps:.2f} end to end, {mb / write['write_s'] / tar_mbps:.2f} shard "
          f"writing only (target >= 0.5 end to end)")

    print(f"\n{'samples/shard':>14}{'shards':>8}{'peak RSS MB':>13}")
    for per in (20, 200, 2000):
        out = subprocess.run([sys.executable, __file__, "--workdir", str(work), "--child", str(media), str(per)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{per:>14}{r['shards']:>8}{r['max_rss_mb']:>13.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
