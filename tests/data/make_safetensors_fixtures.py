#!/usr/bin/python3
"""Writes the .safetensors test fixtures with an independent writer: the Python standard library and numpy only, from
the format's definition (8-byte little-endian header length, JSON header, raw little-endian data), never with the
code under test. Run from the repository root with Debian's python3 (numpy, h5py):

    /usr/bin/python3 tests/data/make_safetensors_fixtures.py

Files:
  safetensors_dtypes.safetensors   one tensor per dtype with values the test recomputes from the same formulas:
                                   f32 (2,3) = arange(6)/4 - 0.5, f64 (2,2) = [[1, -2.5], [1e-300, 3e300]],
                                   f16 (4,) = [0.5, -1.25, 65504, 2**-24], bf16 (3,) = [1, -2, 3.140625],
                                   i64 (3,) = [-2**62, 0, 7], i32 (2,) = [-5, 123456], u8 (3,) = [0, 128, 255],
                                   bool (4,) = [1, 0, 0, 1], empty (0, 3) f32; __metadata__ {"format": "pt",
                                   "note": "fixture"}. Tensors are stored out of name order (the reader sorts by offset).
  ravlt_micro_rrss.safetensors     the golden micro RAVLT (RRSS) state dict of ravlt_micro_rrss.h5, F32
                                   (num_batches_tracked I64), as timm's save_file would write it.
"""
import json
import os
import struct

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def bf16_bits(values):
    """bfloat16 = the upper 16 bits of float32 (the values here are exact in bfloat16)."""
    f32 = np.asarray(values, dtype="<f4")
    return (f32.view("<u4") >> 16).astype("<u2")


def write(path, entries, metadata=None):
    """entries: list of (name, dtype string, shape, raw little-endian bytes), stored in the given order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    blobs = []
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def dtypes_fixture():
    entries = [
        ("i64", "I64", (3,), np.array([-(2**62), 0, 7], dtype="<i8").tobytes()),
        ("f32", "F32", (2, 3), (np.arange(6, dtype="<f4") / 4 - 0.5).reshape(2, 3).tobytes()),
        ("f64", "F64", (2, 2), np.array([[1, -2.5], [1e-300, 3e300]], dtype="<f8").tobytes()),
        ("f16", "F16", (4,), np.array([0.5, -1.25, 65504, 2.0**-24], dtype="<f2").tobytes()),
        ("bf16", "BF16", (3,), bf16_bits([1, -2, 3.140625]).tobytes()),
        ("i32", "I32", (2,), np.array([-5, 123456], dtype="<i4").tobytes()),
        ("u8", "U8", (3,), np.array([0, 128, 255], dtype="u1").tobytes()),
        ("bool", "BOOL", (4,), np.array([1, 0, 0, 1], dtype="u1").tobytes()),
        ("empty", "F32", (0, 3), b""),
    ]
    write(os.path.join(HERE, "safetensors_dtypes.safetensors"), entries, {"format": "pt", "note": "fixture"})


def micro_fixture():
    with h5py.File(os.path.join(HERE, "ravlt_micro_rrss.h5"), "r") as f:
        group = f["state_dict"]
        entries = []
        for name in sorted(group.keys()):
            a = np.asarray(group[name])
            if a.dtype == np.int64:
                entries.append((name, "I64", a.shape, a.astype("<i8").tobytes()))
            else:
                entries.append((name, "F32", a.shape, a.astype("<f4").tobytes()))
    write(os.path.join(HERE, "ravlt_micro_rrss.safetensors"), entries, {"format": "pt"})


if __name__ == "__main__":
    dtypes_fixture()
    micro_fixture()
    print("wrote safetensors_dtypes.safetensors, ravlt_micro_rrss.safetensors")
