"""crawlmix: Common Crawl -> curated, deduplicated, PII-scrubbed text and image data -> WebDataset mixes.

Layers, bottom to top (enforced by import-linter, see pyproject.toml):
    runtime   executor, task markers, atomic writes, config base, funnel counts
    io        paths and URLs, WARC/WET/ARC reading
    filters   rules over signals (Gopher, C4, FineWeb, user rules) and the signals themselves
    text      the per-file text stages: URL filter, language probe, extraction, language ID, quality
    dedup     exact + MinHash-LSH dedup across files
    pii       presidio scrubbing
    images    image-text pairs
    samples   the bundled sample generators
    mix       mixture YAMLs -> WebDataset shards
    crawl     the main job chaining text -> dedup -> PII -> images
    dashboard the read-only browser UI
"""

__version__ = "0.1.0"
