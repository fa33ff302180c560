#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/TARGET/), small on purpose: a few KB per input.

Run from the repository root with Debian's interpreter (torch and PIL; only this generator needs them), after
building the fuzz build's seed writer (`cmake --build build-fuzz --target fuzz_make_seeds`):
    /usr/bin/python3 fuzz/make_seeds.py [BUILD]          (default BUILD: build-fuzz)
Seeds are the tests' own files where they are small (tests/data), cut-down copies where they are not (the first images
of Fashion-MNIST's test split), and a tiny checkpoint in the official layout (torch.save, as make_checkpoint_fixtures.py
writes its fixtures, with 2×3 tensors instead of a model), and a tiny checkpoint and safetensors file in our own
format (BUILD/fuzz_make_seeds: save_checkpoint with extra entries, write_safetensors with metadata).
"""
import argparse
import collections
import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
DATA = os.path.join(ROOT, "tests", "data")
FASHION = "/usr/share/datasets/fashion-mnist"


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tiny_official_checkpoint():
    od = collections.OrderedDict()
    od["patch_embed.proj.0.weight"] = torch.arange(6, dtype=torch.float32).view(2, 3) / 4
    od["layers.0.RoPE.angle"] = torch.tensor([1.0, 0.5], dtype=torch.float64)
    od["norm.num_batches_tracked"] = torch.tensor(3)
    od._metadata = collections.OrderedDict([("", {"version": 1})])
    ema = collections.OrderedDict((k, v * 2 if v.is_floating_point() else v) for k, v in od.items())
    ck = {"model": od, "model_ema": ema, "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0]}]},
          "epoch": 3, "args": argparse.Namespace(model="RAVLT_T"), "max_accuracy": 81.5}
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


def data_pkl(zip_bytes):
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build-fuzz"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([os.path.join(build, "fuzz_make_seeds"), tmp], check=True)
        own = read(os.path.join(tmp, "own_tiny.pth"))
        own_st = read(os.path.join(tmp, "own_tiny.safetensors"))
    shutil.rmtree(CORPUS, ignore_errors=True)
    # checkpoint: the test fixture of tensor views, a tiny official-layout checkpoint, a safetensors file.
    views = read(os.path.join(DATA, "checkpoint_views.pth"))
    official = tiny_official_checkpoint()
    st = read(os.path.join(DATA, "safetensors_dtypes.safetensors"))
    out("checkpoint", "views.pth", views)
    out("checkpoint", "official_tiny.pth", official)
    out("checkpoint", "dtypes.safetensors", st)
    out("checkpoint", "own_tiny.pth", own)
    # pickle: the data.pkl of those checkpoints.
    out("pickle", "views.pkl", data_pkl(views))
    out("pickle", "official_tiny.pkl", data_pkl(official))
    out("pickle", "own_tiny.pkl", data_pkl(own))
    # safetensors
    out("safetensors", "dtypes.safetensors", st)
    out("safetensors", "own_tiny.safetensors", own_st)
    # idx: a 4-byte little-endian length, the images file, the labels file (see fuzz/idx_fuzz.cpp); 3 images.
    with gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")) as f:
        images = f.read(16 + 3 * 784)
    with gzip.open(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read(8 + 3)
    images = images[:4] + struct.pack(">I", 3) + images[8:]
    labels = labels[:4] + struct.pack(">I", 3) + labels[8:]
    out("idx", "plain_3", struct.pack("<I", len(images)) + images + labels)
    gz_images, gz_labels = gzip.compress(images, mtime=0), gzip.compress(labels, mtime=0)
    out("idx", "gzip_3", struct.pack("<I", len(gz_images)) + gz_images + gz_labels)
    # image: the tests' images, plus the other formats stb_image reads, each a few pixels.
    for name in sorted(os.listdir(os.path.join(DATA, "images"))):
        out("image", name, read(os.path.join(DATA, "images", name)))
    img = Image.new("RGB", (5, 3))
    img.putdata([(40 * i % 256, 90 * i % 256, 17 * i % 256) for i in range(15)])
    for fmt, ext in [("BMP", "bmp"), ("GIF", "gif"), ("TGA", "tga"), ("PPM", "ppm")]:
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out("image", "rgb_5x3." + ext, buf.getvalue())
    buf = io.BytesIO()
    img.save(buf, format="JPEG", progressive=True, quality=90)
    out("image", "rgb_5x3_progressive.jpg", buf.getvalue())
    # report_input: the report's table fixtures and one rank file.
    for name in ["train.h5", "ablation.h5", "bench.h5", "ravlt_micro_RRSS.h5"]:
        out("report_input", name, read(os.path.join(DATA, "report", name)))
    # grid: the shipped grids.
    grids = os.path.join(ROOT, "experiments", "grids")
    for name in sorted(os.listdir(grids)):
        out("grid", name, read(os.path.join(grids, name)))
    # pattern: a pattern line, then settings lines.
    for i, text in enumerate(["RRSS\nalpha=0\nrala.gate=0\nsoftmax.lepe=0",
                              "rala,softmax,linear,focused\nnormalizer=mean\nfocusing_factor=3",
                              "CCSS\ncosformer_index=raster_1d", "hedgehog\nfeature_dim=16",
                              "D,T,V,G\nchunk=64\ntransnormer_diag.chunk=49"]):
        out("pattern", "p%d.txt" % i, text.encode())
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print("%-13s %2d seeds, %6d bytes" % (target, len(files), size))


if __name__ == "__main__":
    main()
