"""Source trees for the mixer tests, laid out like the repo after `make run`: sample/media/* (the bundled media
sample, at a scale), output/sample-crawl/curated/*.parquet (shaped like the crawl's curated output) and
output/sample-crawl/pairs/*.tar (shaped like the images stage's image-text pairs)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import types
import typing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("river bridge market farmer weaver trader flood stone timber valley hill coast town year price "
         "record parish wool cheese honey").split()


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 120)))) + "." for _ in range(n)]


def write_curated(path: Path, n: int = 30, seed: int = 0) -> None:
    """A Parquet file shaped like the crawl's curated output (subset of its columns + provenance metadata)."""
    langs = ["en", "en", "de", "fr"]
    rows = {"id": [f"<urn:uuid:{seed}-{i}>" for i in range(n)], "url": [f"https://ex{seed}.org/p/{i}" for i in range(n)],
            "text": texts(n, seed), "language": [langs[i % 4] for i in range(n)],
            "language_score": [0.9] * n, "date": ["2024-05-20T12:00:00Z"] * n, "source": ["sample.warc.gz"] * n,
            "offset": list(range(0, 1000 * n, 1000))}
    t = pa.table(rows).replace_schema_metadata({"config_hash": "abc123", "seed": "0", "crawlmix_version": "0.1.0"})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path)


def write_pairs(path: Path, photos_tar: Path, n: int = 6) -> None:
    """img2dataset-style image-text pairs (.jpg .txt .json, written by tarfile as the images stage does),
    taken from the media sample's photos."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(photos_tar) as src, tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as dst:
        members = [m for m in src if m.name.endswith(".jpg")][:n]
        for i, m in enumerate(members):
            key = f"{i:09d}"
            caption = f"Picture {i} from a crawled page".encode()
            meta = json.dumps({"key": key, "url": f"https://pairs.example/{i}.jpg", "caption": caption.decode(),
                               "status": "success"}).encode()
            for ext, data in (("jpg", src.extractfile(m).read()), ("txt", caption), ("json", meta)):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                dst.addfile(ti, io.BytesIO(data))


def write_tree(root: Path, scale: float) -> Path:
    from crawlmix.samples.media_sample import write_media_sample

    write_media_sample(root / "sample" / "media", seed=0, scale=scale)
    write_curated(root / "output" / "sample-crawl" / "curated" / "a.parquet", 30, 0)
    write_curated(root / "output" / "sample-crawl" / "curated" / "b.parquet", 20, 1)
    write_pairs(root / "output" / "sample-crawl" / "pairs" / "00000.tar", root / "sample" / "media" / "photos.tar")
    return root


def import_wids():
    """wids 0.1.11 imports torch.distributed and torch.utils.data at module level (for its distributed
    sampler, which these tests do not use). Without torch, give it those two names for the import only."""
    try:
        import torch  # noqa: F401
        import wids

        return wids
    except ImportError:
        pass
    T = typing.TypeVar("T")
    t, d, u, ud = (types.ModuleType(n) for n in ("torch", "torch.distributed", "torch.utils", "torch.utils.data"))
    d.is_initialized = lambda: False

    class Dataset(typing.Generic[T]):
        pass

    class Sampler(typing.Generic[T]):
        pass

    ud.Dataset, ud.Sampler = Dataset, Sampler
    t.distributed, t.utils, u.data = d, u, ud
    stub = {"torch": t, "torch.distributed": d, "torch.utils": u, "torch.utils.data": ud}
    sys.modules.update(stub)
    try:
        import wids
    finally:
        for k, v in stub.items():
            if sys.modules.get(k) is v:
                del sys.modules[k]
    return wids


def loader_worker(stage_urls: dict, worker: int, workers: int, seed: int, out) -> None:
    """One data-loader worker of a training loop, without torch: webdataset's own pipeline, this worker's
    share of the shards (split_by_worker reads WORKER / NUM_WORKERS, as a torch DataLoader worker would set
    them), samples shuffled in a buffer, decoded and batched; every image opened with Pillow. Puts
    (worker, {stage: {keys, sources, images}}) on `out`."""
    import os
    from collections import Counter

    os.environ["WORKER"], os.environ["NUM_WORKERS"] = str(worker), str(workers)
    import webdataset as wds
    from PIL import Image

    from crawlmix.mix.read import sample_parts

    res = {}
    for stage, urls in stage_urls.items():
        pipe = wds.DataPipeline(wds.SimpleShardList(urls), wds.split_by_worker, wds.tarfile_to_samples(),
                                wds.shuffle(100, initial=50, seed=seed + worker), wds.decode(),
                                wds.batched(8, collation_fn=None, partial=True))
        keys, sources, images = [], Counter(), 0
        for batch in pipe:
            for s in batch:
                parts = sample_parts(s)
                for kind, data in parts:
                    if kind == "image":
                        with Image.open(io.BytesIO(data)) as im:
                            im.load()
                        images += 1
                if s["json"]["images"] != sum(k == "image" for k, _ in parts):
                    raise AssertionError(f"{s['__key__']}: .json images {s['json']['images']} != parts {parts}")
                keys.append(s["__key__"])
                sources[s["json"]["source"]] += 1
        res[stage] = {"keys": keys, "sources": dict(sources), "images": images}
    out.put((worker, res))
