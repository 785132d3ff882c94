"""Tar index: the members of an uncompressed tar file (names, data offsets, sizes; WebDataset keys and
extensions) read from its headers alone, with NumPy, without tarfile's reader (used by crawlmix/mix/readers.py).

A plain USTAR tar is scanned with NumPy (the blocks carrying the ustar magic, which must chain exactly by
their sizes), any other (GNU long names, pax, directories) by a header walk; checksums and sizes are
verified either way, so garbage or a cut-off file raises tarfile.ReadError. Member bytes are never read.
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------------------------- tar headers
_Z512 = bytes(512)
CHK_SHIFT = 3 * np.arange(5, -1, -1, dtype=np.int64)  # octal digits of a checksum


def _octal(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of (n, k) octal header fields: optional spaces, octal digits, then NULs / spaces (as the
    Python walk reads them); and which fields are well formed."""
    f = f.astype(np.int64)
    dig = (f >= 48) & (f <= 55)
    ndig = dig.sum(1)
    first = dig.argmax(1)
    last = f.shape[1] - 1 - dig[:, ::-1].argmax(1)
    col = np.arange(f.shape[1])
    right = np.cumsum(dig[:, ::-1], 1)[:, ::-1] - dig  # digits to the right of each digit
    val = np.where(dig, (f - 48) << (3 * right), 0).sum(1)
    ok = (ndig > 0) & (ndig == last - first + 1)
    ok &= ((col >= first[:, None]) | (f == 32)).all(1) & ((col <= last[:, None]) | (f == 32) | (f == 0)).all(1)
    return val, ok


def _octal_fast(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_octal() for fields written the usual way (every byte but the last an octal digit, then a NUL or a
    space: "%011o\\0" sizes); the rest of the rows go through _octal()."""
    k = f.shape[1] - 1
    d = f[:, :k].astype(np.int64) - 48
    ok = ((d >= 0) & (d <= 7)).all(1) & ((f[:, k] == 0) | (f[:, k] == 32))
    val = (d << (3 * np.arange(k - 1, -1, -1, dtype=np.int64))).sum(1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        val[bad], ok[bad] = _octal(f[bad])
    return val, ok


def _blocks(mm) -> np.ndarray:
    return np.frombuffer(mm, np.uint8, len(mm) // 512 * 512).reshape(-1, 512)


def _check_headers(mm, hpos) -> None:
    """Verify the USTAR checksums of the headers at byte offsets hpos (vectorised); raise at the first bad one."""
    from tarfile import ReadError

    if not len(hpos):
        return
    blocks = _blocks(mm)
    pos = np.asarray(hpos, np.int64)
    for a in range(0, len(pos), 2048):
        h = blocks[pos[a:a + 2048] // 512]
        want = h.sum(1, dtype=np.uint32).astype(np.int64) - h[:, 148:156].sum(1, dtype=np.int64) + 8 * 32
        f = h[:, 148:156]  # usually "%06o\0 ": compare with the sum written that way
        ok = (f[:, :6] == (want[:, None] >> CHK_SHIFT & 7) + 48).all(1) & (f[:, 6] == 0) & (f[:, 7] == 32)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            got, ok_b = _octal(f[bad])
            ok[bad] = ok_b & (got == want[bad])
        if not ok.all():
            raise ReadError(f"bad header checksum at byte {int(pos[a + int(np.argmin(ok))])} (not a tar, or damaged)")


def _scan_ustar(mm):
    """The headers of a plain USTAR tar found without walking it: every block with the ustar magic is a
    candidate, and the candidates must chain exactly (each header's size leads to the next one, from byte 0
    to an end-of-archive block or the end of the file). Returns (header blocks, sizes), or None for any
    other tar (long names, pax, links, directories, base-256 sizes, a cut) - the Python walk reads those."""
    blocks = _blocks(mm)
    nb = len(blocks)
    if not nb:
        return None
    cand = np.flatnonzero(blocks[:, 257] == 117)  # 'u', then "star" on those
    cand = cand[(blocks[:, 258:262][cand] == np.frombuffer(b"star", np.uint8)).all(1)]
    if not len(cand) or cand[0] != 0:
        return None
    typ = blocks[cand, 156]
    if not np.isin(typ, (48, 0, 55)).all() or blocks[cand, 345].any():  # regular files, no name prefix
        return None
    size, ok = _octal_fast(blocks[:, 124:136][cand])
    if not ok.all():
        return None
    nxt = cand + 1 + (size + 511) // 512
    if (nxt[:-1] != cand[1:]).any() or (int(cand[-1]) + 1) * 512 + int(size[-1]) > len(mm):
        return None
    end = int(nxt[-1])
    if end < nb:
        if blocks[end].any():
            return None  # not an end-of-archive block: let the walk say what it is
    elif len(mm) > end * 512 and mm[end * 512:].count(0) != len(mm) - end * 512:
        return None
    _check_headers(mm, cand * 512)
    return cand, size


class TarScan:
    """A tar's members as WebDataset groups them: per member its extension (ext_of into exts), data offset
    and size; samples start at `starts`; bad: a member without an extension."""

    def __init__(self, mm):
        self._n = None
        fast = _scan_ustar(mm)
        if fast is None:
            names, offs, sizes = tar_members(mm)
            self.offs, self.sizes = np.asarray(offs, np.int64), np.asarray(sizes, np.int64)
            self._from_names(names)
            return
        cand, self.sizes = fast
        self.offs = (cand + 1) * 512
        n = _blocks(mm)[:, :100][cand]  # the name fields
        is0 = n == 0
        self._len = np.where(is0.any(1), is0.argmax(1), 100)
        n = n[:, :max(1, int(self._len.max()))]
        col = np.arange(n.shape[1])
        inside = col < self._len[:, None]
        self._n = n
        if ((n == 47) & inside).any():  # paths with folders: split the decoded names
            names = [self._name(i) for i in range(len(n))]
            self._n = None
            self._from_names(names)
            return
        dot = (n == 46) & inside
        has = dot.any(1)
        self.bad = None if has.all() else int(np.argmin(has))
        if self.bad is not None:
            return
        d = self._d = dot.argmax(1)  # the key is the name up to its first dot
        same = (d[1:] == d[:-1]) & ((n[1:] == n[:-1]) | (col >= d[1:, None])).all(1)
        self.starts = np.concatenate([[0], np.flatnonzero(~same) + 1]).astype(np.int64)
        elen = self._len - d - 1
        width = max(1, int(elen.max()))
        e = n[np.arange(len(n))[:, None], np.minimum(d[:, None] + 1 + np.arange(width), n.shape[1] - 1)]
        e[np.arange(width) >= elen[:, None]] = 0
        if width <= 8:  # one uint64 per extension
            packed = np.zeros((len(n), 8), np.uint8)
            packed[:, :width] = e
            uniq, inv = np.unique(packed.view(np.uint64).ravel(), return_inverse=True)
            uniq = uniq.view(np.uint8).reshape(-1, 8)
        else:
            uniq, inv = np.unique(e, axis=0, return_inverse=True)
        self.exts = [u.tobytes().rstrip(b"\0").decode("utf-8", "replace") for u in uniq]
        self.ext_of = inv.ravel().astype(np.int32)

    def _from_names(self, names: list[str]) -> None:
        self._names = names
        keys, exts = _split_names(names)
        self._keys = keys
        self.bad = next((i for i, e in enumerate(exts) if e is None), None)
        if self.bad is not None:
            return
        ids: dict = {}
        self.ext_of = np.fromiter((ids.setdefault(e, len(ids)) for e in exts), np.int32, len(exts))
        self.exts = list(ids)
        self.starts = np.asarray([0] + [i for i, (x, y) in enumerate(zip(keys, keys[1:]), 1) if x != y], np.int64)

    def __len__(self) -> int:
        return len(self.offs)

    def _name(self, i: int) -> str:
        return self._n[i, :self._len[i]].tobytes().decode("utf-8", "replace")

    def name(self, i: int) -> str:
        return self._names[i] if self._n is None else self._name(i)

    def key(self, i: int) -> str:
        """The key of member i."""
        if self._n is None:
            return self._keys[i]
        return self._n[i, :self._d[i]].tobytes().decode("utf-8", "replace")

    def keys(self, members: np.ndarray) -> list[str]:
        """key() of many members."""
        if self._n is None:
            return [self._keys[i] for i in members.tolist()]
        w = self._n.shape[1]
        raw = self._n[members].tobytes()  # fixed-width rows, cut at each key's length
        return [raw[j * w:j * w + k].decode("utf-8", "replace") for j, k in enumerate(self._d[members].tolist())]


def tar_members(mm) -> tuple[list[str], list[int], list[int]]:
    """Names, data offsets and sizes of the regular files in an uncompressed tar (USTAR, GNU long names,
    pax paths), from the headers alone; checksums and sizes are verified, so garbage or a cut-off file
    raises tarfile.ReadError."""
    from tarfile import ReadError

    size, pos, long_name, pax_name = len(mm), 0, None, None
    names, offs, sizes, hpos = [], [], [], []
    try:
        while pos + 512 <= size:
            if mm[pos] == 0 and mm[pos:pos + 512] == _Z512:
                break  # end-of-archive blocks
            hpos.append(pos)
            raw = mm[pos + 124:pos + 136]
            try:
                n = int.from_bytes(raw[1:], "big") if raw[0] & 0x80 else int(raw.rstrip(b"\0 ").lstrip(b" ") or b"0", 8)
            except ValueError:
                raise ReadError(f"bad size field at byte {pos}") from None
            data = pos + 512
            if data + n > size:
                raise ReadError(f"member at byte {pos} is cut off ({n} bytes declared, file ends at {size})")
            kind = mm[pos + 156]
            if kind in (48, 0, 55):  # '0', NUL, '7': regular files
                name = pax_name or long_name
                if name is None:
                    nb = mm[pos:pos + 100]
                    z = nb.find(0)
                    name = (nb if z < 0 else nb[:z]).decode("utf-8", "replace")
                    if mm[pos + 345] and mm[pos + 257:pos + 262] == b"ustar":
                        pre = mm[pos + 345:pos + 500]
                        z = pre.find(0)
                        name = (pre if z < 0 else pre[:z]).decode("utf-8", "replace") + "/" + name
                names.append(name)
                offs.append(data)
                sizes.append(n)
                long_name = pax_name = None
            elif kind == 76:  # 'L': GNU long name, the data is the next member's name
                long_name = mm[data:data + n].rstrip(b"\0").decode("utf-8", "replace")
            elif kind == 120:  # 'x': pax header, take its path record
                for rec in mm[data:data + n].split(b"\n"):
                    k, _, v = rec.partition(b" ")[2].partition(b"=")
                    if k == b"path":
                        pax_name = v.decode("utf-8", "replace")
            else:  # directories, links, global pax headers: not sample members
                long_name = pax_name = None
            pos = data + (n + 511) // 512 * 512
        else:
            if pos < size and mm[pos:].count(0) != size - pos:
                raise ReadError(f"cut off inside a header at byte {pos}")
    except ReadError:
        _check_headers(mm, hpos)  # a bad checksum explains a bad size or a cut better
        raise
    _check_headers(mm, hpos)
    return names, offs, sizes


def _split_names(names: list[str]) -> tuple[list[str], list]:
    """(key, extension) of each member name: the key is the path up to the first dot of the file name,
    '/' replaced by '_'; the extension None where there is no dot."""
    if "/" not in "".join(names):
        parts = [n.partition(".") for n in names]
        return [p[0] for p in parts], [p[2] if p[1] else None for p in parts]
    keys, exts = [], []
    for name in names:
        slash = name.rfind("/") + 1
        dot = name.find(".", slash)
        keys.append(name[:dot].replace("/", "_") if dot >= 0 else name)
        exts.append(name[dot + 1:] if dot >= 0 else None)
    return keys, exts
