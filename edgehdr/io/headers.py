"""Image headers read before decoding: declared size, format by content, JPEG completeness.

Every reader in EdgeHDR asks here first, so that a file which lies about itself is
refused with its name before a decoder allocates for it:

- the **pixel limit**: a 1.7 MB EXR can declare 16384 x 16384 pixels and make a
  decoder allocate gigabytes. ``check_image_header`` reads the declared size from the
  header and refuses images above ``max_pixels`` (default ``DEFAULT_MAX_PIXELS`` =
  100 megapixels, about 1.2 GB as float32 RGB; override with the environment variable
  ``EDGEHDR_MAX_PIXELS`` or the ``max_pixels`` argument), or with a zero or negative size;
- the **format by content**: a PNG renamed ``.hdr`` is not a radiance map;
- **JPEG completeness**: libjpeg decodes a truncated file with a warning on stderr
  and grey fill; ``jpeg_is_complete`` walks the markers and the entropy-coded data
  to the EOI marker, so a truncated file is an error naming it.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from pathlib import Path

__all__ = ["DEFAULT_MAX_PIXELS", "max_pixels_limit", "declared_size", "check_image_header", "jpeg_is_complete",
           "rgbe_resolution"]

DEFAULT_MAX_PIXELS = 100_000_000

_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".exr": (b"\x76\x2f\x31\x01",),
    ".hdr": (b"#?",),
    ".pic": (b"#?",),
    ".pfm": (b"PF", b"Pf"),
    ".bmp": (b"BM",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
    ".ppm": (b"P6", b"P3"),
    ".pgm": (b"P5", b"P2"),
    ".webp": (b"RIFF",),
}

_KIND = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"\x76\x2f\x31\x01": "OpenEXR", b"#?": "Radiance RGBE",
         b"PF": "PFM", b"Pf": "PFM", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "RIFF/WebP"}


def max_pixels_limit() -> int:
    """The pixel limit in force: ``EDGEHDR_MAX_PIXELS`` if set, else ``DEFAULT_MAX_PIXELS``."""
    raw = os.environ.get("EDGEHDR_MAX_PIXELS")
    if raw is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"EDGEHDR_MAX_PIXELS must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"EDGEHDR_MAX_PIXELS must be a positive integer, got {raw!r}")
    return value


def _what_it_is(head: bytes) -> str:
    for magic, kind in _KIND.items():
        if head.startswith(magic):
            return f"a {kind} file"
    return "not a recognised image"


def declared_size(path: str | os.PathLike[str], head: bytes | None = None) -> tuple[int, int] | None:
    """``(width, height)`` as the file's header declares it, or None for formats not parsed.

    Raises ``ValueError`` naming the file when the content does not match its suffix
    or the header is malformed. Negative sizes are returned as declared.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if head is None:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    magics = _MAGIC.get(suffix)
    if magics is not None and not any(head.startswith(m) for m in magics):
        raise ValueError(f"{path}: not a readable image: the content does not match its suffix {suffix!r} "
                         f"({_what_it_is(head)})")
    try:
        if suffix == ".png":
            return _png_size(path, head)
        if suffix in (".jpg", ".jpeg"):
            return _jpeg_size(path, head)
        if suffix in (".hdr", ".pic"):
            return _rgbe_size(path, head)
        if suffix == ".pfm":
            return _pfm_size(path, head)
        if suffix == ".exr":
            return _exr_size(path)
        if suffix == ".bmp":
            width, height = struct.unpack("<ii", head[18:26])
            return width, abs(height)  # negative height means top-down rows
        if suffix in (".tif", ".tiff"):
            return _tiff_size(path, head)
        if suffix in (".ppm", ".pgm"):
            tokens = re.sub(rb"#[^\n]*", b" ", head[2:256]).split()
            try:
                return int(tokens[0]), int(tokens[1])
            except ValueError:
                raise ValueError(f"{path}: not a readable image: malformed {suffix} header (width and height "
                                 f"{tokens[:2]!r} are not integers)") from None
        if suffix == ".webp":
            return _webp_size(path, head)
    except (struct.error, IndexError) as exc:
        raise ValueError(f"{path}: not a readable image: truncated or malformed {suffix} header") from exc
    return None


def _jpeg_size(path: Path, head: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            raise ValueError(f"{path}: malformed JPEG marker at byte {pos}")
        marker = head[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = struct.unpack(">H", head[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    with open(path, "rb") as fh:  # large APP segments (EXIF thumbnails, ICC) push SOF past the first read
        data = fh.read()
    if len(data) > len(head):
        return _jpeg_size(path, data)
    raise ValueError(f"{path}: JPEG without a frame header (SOF marker); truncated or not a JPEG")


def _png_size(path: Path, head: bytes) -> tuple[int, int]:
    """IHDR's size, after a walk over the chunk headers: a chunk whose declared length runs past the end of the
    file (libpng allocates for it before it finds out: 2 GB for an 84-byte file) is refused."""
    length, kind = struct.unpack(">I4s", head[8:16])
    if kind != b"IHDR" or length != 13:
        raise ValueError(f"{path}: not a readable image: a PNG must start with its 13-byte IHDR chunk")
    width, height = struct.unpack(">II", head[16:24])
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size, pos = len(data), 8  # mapped: the chunk headers are read without a system call each (1500 at 1080p)
        while pos + 8 <= size:
            length, kind = struct.unpack_from(">I4s", data, pos)
            if length > 0x7FFFFFFF or pos + 12 + length > size:
                raise ValueError(f"{path}: not a readable image: PNG chunk {kind!r} at byte {pos} declares "
                                 f"{length} bytes, beyond the file's {size}")
            if kind == b"IEND":
                break
            pos += 12 + length
    return width, height


def _webp_size(path: Path, head: bytes) -> tuple[int, int]:
    """Canvas size of a WebP: its VP8X, VP8L (lossless) or VP8 (lossy) header (Google's WebP container and
    bitstream specifications)."""
    if head[8:12] != b"WEBP":
        raise ValueError(f"{path}: not a readable image: a RIFF file but not WebP")
    kind, data = head[12:16], head[20:30]
    if kind == b"VP8X":
        return 1 + int.from_bytes(data[4:7], "little"), 1 + int.from_bytes(data[7:10], "little")
    if kind == b"VP8L":
        if data[0] != 0x2F:
            raise ValueError(f"{path}: not a readable image: malformed WebP lossless header")
        bits = int.from_bytes(data[1:5], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if kind == b"VP8 ":
        if data[3:6] != b"\x9d\x01\x2a":
            raise ValueError(f"{path}: not a readable image: malformed WebP lossy header")
        width, height = struct.unpack("<HH", data[6:10])
        return width & 0x3FFF, height & 0x3FFF
    raise ValueError(f"{path}: not a readable image: unknown WebP chunk {kind!r}")


def _tiff_size(path: Path, head: bytes) -> tuple[int, int]:
    order = "<" if head[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", head[4:8])[0]
    if offset + 2 > len(head):  # the first directory lies beyond what was read: read it from there
        if offset + 2 > path.stat().st_size:
            raise ValueError(f"{path}: not a readable image: TIFF's first directory offset {offset} lies beyond the "
                             f"file's end")
        with open(path, "rb") as fh:
            fh.seek(offset)
            head, offset = fh.read(2 + 12 * 4096), 0
    count = struct.unpack(order + "H", head[offset:offset + 2])[0]
    found = {}
    for k in range(count):
        entry = head[offset + 2 + 12 * k:offset + 14 + 12 * k]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            value = entry[8:10] if kind == 3 else entry[8:12]
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value)[0]
    if 256 not in found or 257 not in found:
        raise ValueError(f"{path}: TIFF without ImageWidth/ImageLength in its first directory")
    return found[256], found[257]


RgbeAxis = tuple[str, str, int]  # sign ('+' or '-'), axis ('X' or 'Y'), count


def rgbe_resolution(path: str | os.PathLike[str], head: bytes) -> tuple[int, int, RgbeAxis, RgbeAxis]:
    """A Radiance file's resolution line: the offsets of the header's end (its blank line) and of the line's end,
    then the slow and the fast axis as ``(sign, axis, count)`` (``-Y H +X W`` is the standard order; Radiance
    allows all eight). ``ValueError`` naming the file for a malformed line."""
    end = head.find(b"\n\n")
    if end < 0:
        raise ValueError(f"{path}: Radiance header has no end (blank line) in its first {len(head)} bytes")
    line_end = head.find(b"\n", end + 2)
    if line_end < 0:
        raise ValueError(f"{path}: no Radiance resolution line in the first {len(head)} bytes")
    line = head[end + 2:line_end].decode("ascii", "replace").split()
    if (len(line) != 4 or any(len(f) != 2 or f[0] not in "+-" or f[1] not in "XY" for f in line[0::2])
            or line[0][1] == line[2][1]):
        raise ValueError(f"{path}: malformed Radiance resolution line {' '.join(line)!r} (expected '-Y H +X W' or "
                         "another order of two signed axes)")
    try:
        first, second = int(line[1]), int(line[3])
    except ValueError:
        raise ValueError(f"{path}: malformed Radiance resolution line {' '.join(line)!r}") from None
    return end, line_end, (line[0][0], line[0][1], first), (line[2][0], line[2][1], second)


def _rgbe_size(path: Path, head: bytes) -> tuple[int, int]:
    _, _, (_, slow, first), (_, _, second) = rgbe_resolution(path, head)
    return (second, first) if slow == "Y" else (first, second)


def _check_pfm_length(path: Path, head: bytes, width: int, height: int) -> None:
    """A PFM's pixels are exactly width x height x channels floats after its three header lines: more data means
    the header's size is wrong (OpenCV would return some other rows), less is truncation."""
    lines = head.split(b"\n", 3)
    if len(lines) < 4:
        return  # OpenCV's decoder reports it
    channels = 3 if lines[0].strip() == b"PF" else 1
    header_bytes = sum(len(line) + 1 for line in lines[:3])
    needed = width * height * channels * 4
    actual = path.stat().st_size - header_bytes
    if actual != needed:
        raise ValueError(f"{path}: {actual} bytes of pixels, the header's {width} x {height} x {channels} floats "
                         f"need {needed} ({'truncated' if actual < needed else 'wrong size in the header'}?)")


def _pfm_size(path: Path, head: bytes) -> tuple[int, int]:
    tokens = head[2:128].split()
    try:
        return int(tokens[0]), int(tokens[1])
    except (IndexError, ValueError):
        raise ValueError(f"{path}: malformed PFM header (expected 'PF', then width and height)") from None


def _exr_size(path: Path) -> tuple[int, int]:
    import OpenEXR

    try:
        with OpenEXR.File(str(path), header_only=True) as exr:
            (x0, y0), (x1, y1) = exr.header()["dataWindow"]
    except Exception as exc:  # the binding raises RuntimeError, ValueError or IndexError on bad headers
        raise ValueError(f"{path}: not a readable OpenEXR header ({exc})") from exc
    return int(x1) - int(x0) + 1, int(y1) - int(y0) + 1


def check_image_header(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[int, int] | None:
    """Validate a file's header before decoding; return its declared ``(width, height)``.

    Raises
    ------
    ValueError
        The content does not match the suffix, the header is malformed, the declared
        size is not positive, or ``width * height`` exceeds ``max_pixels``.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    size = declared_size(path, head)
    if size is None:
        return None
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: header declares an image of {width} x {height} pixels; both must be positive")
    limit = max_pixels_limit() if max_pixels is None else int(max_pixels)
    if width * height > limit:
        raise ValueError(
            f"{path}: header declares {width} x {height} = {width * height / 1e6:.1f} MP, above the limit of "
            f"{limit / 1e6:.3g} MP (set EDGEHDR_MAX_PIXELS to raise it)"
        )
    if path.suffix.lower() == ".pfm":
        _check_pfm_length(path, head, width, height)
    return size


def jpeg_is_complete(data: bytes) -> bool:
    """True when a JPEG stream reaches its EOI marker through well-formed segments.

    Walks the marker segments and, after each SOS, the entropy-coded data (where
    ``FF 00`` is a stuffed byte and ``FF D0..D7`` are restart markers) to the next
    marker, until EOI. Progressive files have several scans; trailing data after
    EOI (maker notes, MPF previews) is allowed.
    """
    n = len(data)
    if n < 4 or data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > n:
            return False
        length = (data[pos + 2] << 8) | data[pos + 3]
        pos += 2 + length
        if pos > n:
            return False
        if marker == 0xDA:  # entropy-coded data follows the scan header
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    return False
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break
    return False
