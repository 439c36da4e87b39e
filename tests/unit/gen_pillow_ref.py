#!/usr/bin/python3
"""Generates the Pillow reference fixtures used by tests/unit/test_image.cc.

Run with Debian's python3 (Pillow 9.4 + numpy, linked against the system libjpeg-turbo):
    /usr/bin/python3 tests/unit/gen_pillow_ref.py [--shared /work/shared/data]

Outputs (all small) go to tests/data/image/:
  * synthetic images written here (PNG in many colour types / bit depths, JPEG in several
    flavours) and, for each, `<file>.rgb.bin` = Pillow's Image.open(f).convert('RGB') as raw
    uint8 HWC (for the 16-bit grey PNG the expected value is v >> 8, see image.h);
  * for a few brain MRI test images of the shared data set (CC0; the images themselves are NOT
    copied, tests read them from MEDQ_SHARED_DATA and skip when it is absent):
      `brain_<i>.rgb128.bin`  Pillow convert('RGB').resize((128, 128), BILINEAR), uint8 HWC
      `brain_<i>.pre32x24.bin` the float32 NCHW tensor of the models' contract
                               (x / 255 - mean) / std on resize((32, 24), BILINEAR)
  * `manifest.json` describing every fixture (file, size, channels, source path).
"""
import argparse
import io
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "image")
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
BRAIN = ["test/glioma/Te-glTr_0000.jpg",  # Pillow mode RGB
         "test/glioma/Te-gl_0074.jpg"]    # Pillow mode L (greyscale JPEG)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def pack_row(row, bit_depth):
    """row: 1-D array of samples (already interleaved)."""
    if bit_depth == 16:
        return row.astype(">u2").tobytes()
    if bit_depth == 8:
        return row.astype(np.uint8).tobytes()
    per = 8 // bit_depth
    out = bytearray()
    for i in range(0, len(row), per):
        b = 0
        for j in range(per):
            v = int(row[i + j]) if i + j < len(row) else 0
            b |= v << (8 - bit_depth * (j + 1))
        out.append(b)
    return bytes(out)


def write_png(path, arr, color_type, bit_depth, interlace=False, palette=None, trns=None):
    """Minimal PNG writer (filter 0) covering what Pillow cannot write: 16-bit RGB(A)/LA,
    2/4-bit grey, Adam7 interlacing."""
    h, w = arr.shape[:2]
    flat = arr.reshape(h, w, -1)
    raw = b""
    if not interlace:
        for y in range(h):
            raw += b"\0" + pack_row(flat[y].reshape(-1), bit_depth)
    else:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                  (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        for x0, y0, dx, dy in passes:
            sub = flat[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for y in range(sub.shape[0]):
                raw += b"\0" + pack_row(sub[y].reshape(-1), bit_depth)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if palette is not None:
        data += png_chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        data += png_chunk(b"tRNS", trns)
    data += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def synth_rgb(w, h, seed=0):
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                    (x * y) % 256], -1).astype(np.int32)
    img += rs.randint(-20, 21, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save_ref(name, rgb):
    rgb = np.ascontiguousarray(rgb, np.uint8)
    rgb.tofile(os.path.join(OUT, name + ".rgb.bin"))
    return {"file": name, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "shared", "data"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    manifest = {"decode": [], "brain": []}
    rgb = synth_rgb(40, 30)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))

    def pil_ref(name):
        return save_ref(name, np.asarray(Image.open(os.path.join(OUT, name)).convert("RGB")))

    # ---- JPEG (written by Pillow/libjpeg-turbo) ----
    Image.fromarray(rgb).save(os.path.join(OUT, "synth_420.jpg"), quality=90)
    Image.fromarray(rgb).save(os.path.join(OUT, "synth_444.jpg"), quality=95, subsampling=0)
    Image.fromarray(rgb).save(os.path.join(OUT, "synth_422.jpg"), quality=85, subsampling=1)
    Image.fromarray(rgb).save(os.path.join(OUT, "synth_progressive.jpg"), quality=80,
                              progressive=True)
    Image.fromarray(gray).save(os.path.join(OUT, "synth_gray.jpg"), quality=90)
    Image.fromarray(rgb).convert("CMYK").save(os.path.join(OUT, "synth_cmyk.jpg"), quality=90)
    for n in ["synth_420.jpg", "synth_444.jpg", "synth_422.jpg", "synth_progressive.jpg",
              "synth_gray.jpg", "synth_cmyk.jpg"]:
        manifest["decode"].append(pil_ref(n))

    # ---- PNG written by Pillow ----
    small = synth_rgb(9, 7, seed=1)
    Image.fromarray(small).save(os.path.join(OUT, "rgb8.png"))
    Image.fromarray(np.dstack([small, np.full(small.shape[:2], 77, np.uint8)]), "RGBA").save(
        os.path.join(OUT, "rgba8.png"))
    g = np.asarray(Image.fromarray(small).convert("L"))
    Image.fromarray(g).save(os.path.join(OUT, "gray8.png"))
    Image.fromarray(np.dstack([g, 255 - g]), "LA").save(os.path.join(OUT, "la8.png"))
    Image.fromarray(g).convert("1").save(os.path.join(OUT, "gray1.png"))
    pal = Image.fromarray(small).quantize(colors=12)
    pal.save(os.path.join(OUT, "palette4.png"), bits=4)
    pal.save(os.path.join(OUT, "palette8_trns.png"), transparency=3)
    for n in ["rgb8.png", "rgba8.png", "gray8.png", "la8.png", "gray1.png", "palette4.png",
              "palette8_trns.png"]:
        manifest["decode"].append(pil_ref(n))

    # ---- PNG written by hand (formats Pillow cannot write) ----
    rs = np.random.RandomState(2)
    rgb16 = rs.randint(0, 65536, (7, 9, 3)).astype(np.uint16)
    write_png(os.path.join(OUT, "rgb16.png"), rgb16, 2, 16)
    rgba16 = rs.randint(0, 65536, (7, 9, 4)).astype(np.uint16)
    write_png(os.path.join(OUT, "rgba16.png"), rgba16, 6, 16)
    la16 = rs.randint(0, 65536, (7, 9, 2)).astype(np.uint16)
    write_png(os.path.join(OUT, "la16.png"), la16, 4, 16)
    g2 = rs.randint(0, 4, (7, 9)).astype(np.uint8)
    write_png(os.path.join(OUT, "gray2.png"), g2, 0, 2)
    g4 = rs.randint(0, 16, (7, 9)).astype(np.uint8)
    write_png(os.path.join(OUT, "gray4.png"), g4, 0, 4)
    write_png(os.path.join(OUT, "rgb8_interlaced.png"), synth_rgb(13, 11, seed=3), 2, 8,
              interlace=True)
    for n in ["rgb16.png", "rgba16.png", "la16.png", "gray2.png", "gray4.png",
              "rgb8_interlaced.png"]:
        manifest["decode"].append(pil_ref(n))
    # 16-bit grey: Pillow opens mode "I" and convert('RGB') clips at 255; medq keeps the high
    # byte instead (documented in image.h), so the expected output is v >> 8.
    g16 = rs.randint(0, 65536, (7, 9)).astype(np.uint16)
    write_png(os.path.join(OUT, "gray16.png"), g16, 0, 16)
    manifest["decode"].append(save_ref("gray16.png", np.repeat((g16 >> 8)[..., None], 3, -1)))

    # ---- Resize references on the synthetic JPEG (uint8 path) ----
    manifest["resize"] = []
    filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR,
               "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "box": Image.BOX,
               "hamming": Image.HAMMING}
    src = Image.open(os.path.join(OUT, "synth_420.jpg")).convert("RGB")
    for fname, fid in filters.items():
        sizes = [(17, 13)] + ([(50, 35)] if fname in ("nearest", "bilinear", "bicubic") else [])
        for (w, h) in sizes:
            name = f"resize_{fname}_{w}x{h}.bin"
            np.asarray(src.resize((w, h), fid)).tofile(os.path.join(OUT, name))
            manifest["resize"].append({"source": "synth_420.jpg", "filter": fname, "width": w,
                                       "height": h, "ref": name})

    # ---- Resize references for non-integral (float, Pillow mode "F") images ----
    # Input: 20x15, v(x, y) = ((7x + 13y) % 256) * 0.5 + 0.25 (exact in float32).
    manifest["resize_float"] = []
    yy, xx = np.mgrid[0:15, 0:20]
    fimg = Image.fromarray((((7 * xx + 13 * yy) % 256) * 0.5 + 0.25).astype(np.float32), "F")
    for fname in ("bilinear", "bicubic", "nearest"):
        for (w, h) in ((7, 5), (31, 23)):
            name = f"resize_float_{fname}_{w}x{h}.bin"
            np.asarray(fimg.resize((w, h), filters[fname])).astype("<f4").tofile(
                os.path.join(OUT, name))
            manifest["resize_float"].append({"filter": fname, "width": w, "height": h,
                                             "ref": name})

    # ---- Real brain MRI images (CC0): references only, images read from the shared data ----
    for i, rel in enumerate(BRAIN):
        src = os.path.join(args.shared, "brain_mri", rel)
        if not os.path.exists(src):
            print("shared data not found, skipping brain references:", src)
            break
        im = Image.open(src)
        mode = im.mode
        r128 = np.asarray(im.convert("RGB").resize((128, 128), Image.BILINEAR))
        r128.tofile(os.path.join(OUT, f"brain_{i}.rgb128.bin"))
        r32 = np.asarray(Image.open(src).convert("RGB").resize((32, 24), Image.BILINEAR))
        x = r32.transpose(2, 0, 1).astype(np.float32)
        pre = ((x / np.float32(255) - MEAN) / STD).astype("<f4")
        pre.tofile(os.path.join(OUT, f"brain_{i}.pre32x24.bin"))
        manifest["brain"].append({"index": i, "source": "brain_mri/" + rel, "pillow_mode": mode,
                                  "rgb128": f"brain_{i}.rgb128.bin",
                                  "pre32x24": f"brain_{i}.pre32x24.bin"})

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
