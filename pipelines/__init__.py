"""crawlmix pipeline stages. Each module is one stage; ``crawl.py`` chains them on Ray."""

__version__ = "0.1.0"
