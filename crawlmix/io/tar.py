"""Deterministic USTAR members: fixed mode 0444, owner crawlmix, mtime 0, so the same samples always give
the same bytes. The mixer assembles shards from these headers in bulk (crawlmix.mix.write); TarWriter
writes samples one at a time (the bundled media sample).

webdataset.TarWriter is not used here: it sorts members, stamps tarfile's own header fields and pads to
10 KiB records, so its bytes differ from the shards the mixer assembles from pre-planned byte ranges.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# USTAR headers with fixed mode, owner, mtime: the same samples always give the same bytes.
TAR_MTIME = 0
TAR_TEMPLATE = bytearray(512)
for _off, _val in ((100, b"0000444\0"), (108, b"0000000\0"), (116, b"0000000\0"), (136, b"%011o\0" % TAR_MTIME),
                   (148, b" " * 8), (156, b"0"), (257, b"ustar\x0000"), (265, b"crawlmix"), (297, b"crawlmix")):
    TAR_TEMPLATE[_off:_off + len(_val)] = _val
TAR_BASE_SUM = sum(TAR_TEMPLATE)
ZEROS = bytes(1024)


def tar_header(name: str, size: int) -> bytes:
    nb = name.encode()
    if len(nb) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    h = bytearray(TAR_TEMPLATE)
    h[0:len(nb)] = nb
    sz = b"%011o\0" % size
    h[124:136] = sz
    chk = TAR_BASE_SUM + sum(nb) + sum(sz)
    h[148:156] = b"%06o\0 " % chk
    return bytes(h)


class TarWriter:
    """Deterministic tar writer for samples written one at a time; md5 computed on the fly."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.f = open(self.path, "wb")
        self.md5 = hashlib.md5()
        self.bytes = 0

    def _w(self, blob: bytes) -> None:
        self.f.write(blob)
        self.md5.update(blob)
        self.bytes += len(blob)

    def write(self, key: str, members: list[tuple[str, bytes]]) -> int:
        parts = []
        for ext, data in members:
            parts.append(tar_header(f"{key}.{ext}", len(data)))
            parts.append(data)
            pad = -len(data) % 512
            if pad:
                parts.append(ZEROS[:pad])
        blob = b"".join(parts)
        self._w(blob)
        return len(blob)

    def close(self) -> None:
        self._w(ZEROS)
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.f.close()
