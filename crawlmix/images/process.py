"""Image bytes -> a checked, resized, re-encoded RGB image (Pillow), or a reason it was dropped.

Steps, cheapest first so that bad input costs little: size cap on the bytes, SVG sniffing,
``Image.open`` (header only: format, size, frames), the decompression-bomb guard and the size
filters on the header's dimensions, then the decode (JPEGs larger than twice the target are
decoded at 1/2..1/8 scale by libjpeg, as ``Image.thumbnail`` does), EXIF transpose, RGB
(transparency composited on the border colour, CMYK/palette/16-bit converted), resize in one
of img2dataset's modes, re-encode, and a 64-bit perceptual hash (pHash: DCT of a 32x32 grey
thumbnail, 8x8 low frequencies against their median).

Every failure is an ``ImageError(reason, detail)``; nothing else escapes ``process``.

Run alone:  python pipelines/image_process.py FILE [FILE ...] [--size 256 --mode center_crop --out DIR]
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error  # raised by some Pillow plugins on bad headers

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from crawlmix.images.config import FilterConfig, ProcessConfig

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut-off image is an error, not a grey-filled picture
# The guard below (ProcessConfig.max_pixels) decides; Pillow's own warning would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
             "bilinear": Image.Resampling.BILINEAR, "box": Image.Resampling.BOX}
_SAVE = {"jpg": ("JPEG", "jpg"), "webp": ("WEBP", "webp"), "png": ("PNG", "png")}
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height

# pHash: rows 0..7 of the 32-point DCT-II matrix (scale does not matter against the median)
_N = 32
_DCT = np.cos(np.pi / _N * (np.arange(_N)[None, :] + 0.5) * np.arange(8)[:, None])
_BITS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


class ImageError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class ProcessedImage:
    data: bytes  # the re-encoded image
    ext: str  # jpg / webp / png
    width: int
    height: int
    original_width: int
    original_height: int
    source_format: str  # Pillow's name for the input format
    source_mode: str
    sha256: str  # of the original bytes
    phash: int  # 64-bit perceptual hash (unsigned)


def looks_like_svg(data: bytes) -> bool:
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(b"<") and b"<svg" in head


def phash(img: Image.Image) -> int:
    """imagehash.phash's algorithm (grey 32x32 LANCZOS thumbnail, DCT-II, 8x8 low band > median),
    with a box pre-reduction by integer factors (keeping >= 32 px) that makes it ~3x cheaper."""
    fx, fy = max(1, img.width // _N), max(1, img.height // _N)
    if fx > 1 or fy > 1:
        img = img.reduce((fx, fy))
    g = img.convert("L") if img.mode != "L" else img
    px = np.asarray(g.resize((_N, _N), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ px @ _DCT.T).ravel()
    srt = np.sort(low)
    bits = low > (srt[31] + srt[32]) / 2  # the median of 64 values
    return int(np.bitwise_or.reduce(_BITS[bits])) if bits.any() else 0


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def target_size(w: int, h: int, cfg: ProcessConfig) -> tuple[int, int]:
    """Size of the resized image before any crop or border (img2dataset's modes)."""
    mode, size = cfg.resize_mode, cfg.image_size
    if mode == "no":
        return w, h
    side = min(w, h) if mode in ("keep_ratio", "center_crop") else max(w, h)
    if cfg.resize_only_if_bigger and side <= size:
        return w, h
    k = size / side
    return max(1, round(w * k)), max(1, round(h * k))


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block does not make the picture unusable
        return 1


class ImageProcessor:
    """One per worker: ``process(bytes)`` -> ProcessedImage, or raises ImageError."""

    def __init__(self, cfg: ProcessConfig, filters: FilterConfig | None = None):
        self.cfg, self.f = cfg, filters or FilterConfig()
        self.formats = tuple(x.upper() for x in cfg.formats)
        self.resample = _RESAMPLE[cfg.resample]
        self.save_fmt, self.ext = _SAVE[cfg.encode_format]
        self.save_kw = {"quality": cfg.encode_quality} if cfg.encode_format != "png" else {}

    def check_size(self, w: int, h: int) -> None:
        """Filters on the original dimensions (header only, before decoding)."""
        f = self.f
        if w * h > self.cfg.max_pixels:
            raise ImageError("decompression_bomb", f"{w}x{h} = {w * h} pixels > process.max_pixels")
        if min(w, h) < f.min_side:
            raise ImageError("too_small", f"{w}x{h} < filters.min_side {f.min_side}")
        if max(w, h) / max(1, min(w, h)) > f.max_aspect_ratio:
            raise ImageError("aspect_ratio", f"{w}x{h} > filters.max_aspect_ratio {f.max_aspect_ratio}")
        if w * h > f.max_area:
            raise ImageError("too_large_area", f"{w}x{h} > filters.max_area {f.max_area}")

    def process(self, data: bytes) -> ProcessedImage:
        try:
            return self._process(data)
        except ImageError:
            raise
        except Image.DecompressionBombError as e:
            raise ImageError("decompression_bomb", str(e)[:200]) from None
        except UnidentifiedImageError:
            raise ImageError("decode_error", "not an image Pillow can identify") from None
        except (OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError, EOFError,
                MemoryError, ZeroDivisionError, struct_error, RuntimeError) as e:
            msg = str(e) or type(e).__name__
            reason = "truncated_image" if "truncated" in msg or isinstance(e, EOFError) else "decode_error"
            raise ImageError(reason, f"{type(e).__name__}: {msg[:200]}") from None

    def _process(self, data: bytes) -> ProcessedImage:
        cfg = self.cfg
        if not data:
            raise ImageError("empty", "0 bytes")
        if len(data) > cfg.max_bytes:
            raise ImageError("too_large", f"{len(data)} bytes > process.max_bytes {cfg.max_bytes}")
        if looks_like_svg(data):
            raise ImageError("svg", "SVG (vector) image")
        img = Image.open(io.BytesIO(data))
        fmt = img.format or "?"
        if fmt.upper() not in self.formats:
            raise ImageError("unsupported_format", f"{fmt} not in process.formats")
        if getattr(img, "n_frames", 1) > 1 and not (fmt == "MPO"):  # MPO: a JPEG with extra views
            if cfg.animated == "drop":
                raise ImageError("animated", f"{fmt} with {img.n_frames} frames")
        ow, oh = img.size
        self.check_size(ow, oh)  # symmetric in width/height: EXIF rotation does not matter yet
        src_mode = img.mode
        jpeg = fmt in ("JPEG", "MPO")
        # JPEG: the EXIF block is read with the header. Other formats may decode the whole image to
        # find it (PNG eXIf after IDAT), so they are asked after load(), which must raise on bad data.
        orientation = _orientation(img) if jpeg else 1
        if jpeg and cfg.jpeg_draft and cfg.resize_mode != "no":
            tw, th = target_size(*((oh, ow) if orientation in _ROTATED else (ow, oh)), cfg)
            dw, dh = (th, tw) if orientation in _ROTATED else (tw, th)
            if img.width >= 4 * dw and img.height >= 4 * dh:
                img.draft("RGB", (2 * dw, 2 * dh))  # at least twice the target: no visible loss
        img.load()
        if not jpeg and fmt in ("PNG", "WEBP", "TIFF", "AVIF"):
            orientation = _orientation(img)
        if orientation in _ROTATED:
            ow, oh = oh, ow
        tw, th = target_size(ow, oh, cfg)
        if orientation != 1:
            from PIL import ImageOps

            img = ImageOps.exif_transpose(img)
        img = self._rgb(img)
        if img.size != (tw, th):
            img = img.resize((tw, th), self.resample, reducing_gap=None)
        ph = phash(img)
        img = self._frame(img)
        out = io.BytesIO()
        img.save(out, self.save_fmt, **self.save_kw)
        return ProcessedImage(out.getvalue(), self.ext, img.width, img.height, ow, oh, fmt, src_mode,
                              hashlib.sha256(data).hexdigest(), ph)

    def _rgb(self, img: Image.Image) -> Image.Image:
        mode = img.mode
        if mode == "RGB":
            return img
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            mode = img.mode
        elif mode in ("LA", "PA", "La", "RGBa"):
            img = img.convert("RGBA")
            mode = "RGBA"
        elif mode.startswith("I;16") or mode in ("I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            hi = arr.max() or 1.0
            img = Image.fromarray((arr * (255.0 / (65535.0 if hi > 255 else 255.0))).clip(0, 255).astype(np.uint8))
            mode = "L"
        if mode == "RGBA":
            bg = Image.new("RGB", img.size, self.cfg.border_color)
            bg.paste(img, mask=img.getchannel("A"))
            return bg
        return img.convert("RGB")

    def _frame(self, img: Image.Image) -> Image.Image:
        mode, size = self.cfg.resize_mode, self.cfg.image_size
        w, h = img.size
        if mode == "center_crop" and (w > size or h > size):
            left, top = (w - min(w, size)) // 2, (h - min(h, size)) // 2
            return img.crop((left, top, left + min(w, size), top + min(h, size)))
        if mode == "border" and (w != size or h != size) and w <= size and h <= size:
            canvas = Image.new("RGB", (size, size), self.cfg.border_color)
            canvas.paste(img, ((size - w) // 2, (size - h) // 2))
            return canvas
        return img


def main(argv=None) -> int:
    import argparse

    from crawlmix.runtime.atomic import write_bytes

    ap = argparse.ArgumentParser(description="Decode, check, resize and re-encode image files; print what happens.")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--mode", default="keep_ratio",
                    choices=["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"])
    ap.add_argument("--format", default="jpg", choices=["jpg", "webp", "png"])
    ap.add_argument("--min-side", type=int, default=1)
    ap.add_argument("--out", metavar="DIR", help="write the re-encoded images here")
    a = ap.parse_args(argv)
    p = ImageProcessor(ProcessConfig(image_size=a.size, resize_mode=a.mode, encode_format=a.format),
                       FilterConfig(min_side=a.min_side, max_aspect_ratio=1e9))
    for f in a.files:
        try:
            r = p.process(Path(f).read_bytes())
        except ImageError as e:
            print(f"DROP {e.reason:<20} {f}: {e.detail}")
            continue
        print(f"ok   {r.source_format:<5} {r.source_mode:<5} {r.original_width}x{r.original_height} -> "
              f"{r.width}x{r.height} {len(r.data)} B phash={r.phash:016x}  {f}")
        if a.out:
            write_bytes(Path(a.out) / f"{Path(f).stem}.{r.ext}", r.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
