#!/usr/bin/python3
"""Golden files and checkpoint fixtures for the DeiT harness, made by timm's own `VisionTransformer`.

timm is not committed and not installed: this script imports timm's modules from a snapshot of
huggingface/pytorch-image-models given as the argument (a folder holding `timm/`, or the git directory of a clone,
from which `timm/` is exported with `git archive`). It runs under Debian's python3 with torch 1.13, numpy and h5py;
torchvision, which timm imports for a few data-pipeline helpers the model never uses, is replaced by an empty stand-in,
and timm's package `__init__`s (which import every model and the data pipeline) are bypassed.

    /usr/bin/python3 tests/data/make_timm_deit_golden.py /path/to/pytorch-image-models[/.git]

Model: timm's deit_tiny_patch16_224 configuration (`VisionTransformer(patch_size=16, embed_dim=192, num_heads=3)`,
qkv_bias, LayerNorm eps 1e-6, cls token, global_pool 'token') reduced to depth 2 and 10 classes, with
dynamic_img_size=True so that timm itself resamples the position embedding for other input sizes
(`resample_abs_pos_embed`: bicubic, antialias, the cls token's entry kept out of the resampling). Every parameter is
randomised (LayerNorm weights and biases included, a strong position embedding) so that a wrong wiring cannot pass.
Eval mode, float32, CPU.

Files (tests/data/):
  timm_deit_tiny_depth2.pth          torch.save({'model': state_dict}) by timm's model, as the DeiT release files are laid
                                     out (deit_tiny_patch16_224-a1311bcf.pth)
  timm_deit_tiny_depth2.safetensors  the same state dict as timm's hub `model.safetensors`: F32, keys sorted, header
                                     {"__metadata__": {"format": "pt"}, ...}, written here with the standard library
                                     and numpy from the format's definition
  timm_deit_tiny_depth2.h5           attrs source (timm commit), config; input (1,3,224,224), logits (1,10) (the names
                                     `rala predict --input-h5` reads); input_160x256 (1,3,160,256), logits_160x256
                                     (1,10); pos_embed_160x256 (1,161,192) = timm's resample_abs_pos_embed of pos_embed
                                     to the 10x16 patch grid
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import types
import importlib.abc
import importlib.machinery

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "timm_deit_tiny_depth2"


def timm_source(path):
    """(folder holding timm/, commit) from a source folder or a git directory."""
    if os.path.isfile(os.path.join(path, "timm", "__init__.py")):
        commit = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        return path, commit or "unknown"
    commit = subprocess.run(["git", "--git-dir", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    out = tempfile.mkdtemp(prefix="timm-src-")
    archive = subprocess.run(["git", "--git-dir", path, "archive", "HEAD", "timm"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", out], input=archive.stdout, check=True)
    return out, commit


class _Stub(types.ModuleType):
    """torchvision stand-in: any attribute is an empty class (only module-level imports of timm touch them)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (torch.nn.Module,), {})
        setattr(self, name, cls)
        return cls


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def import_timm(src):
    sys.meta_path.insert(0, _StubFinder())
    for name in ["timm", "timm.models", "timm.data"]:  # packages without their heavy __init__
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(src, *name.split("."))]
        sys.modules[name] = m
    import timm.version
    sys.modules["timm"].__version__ = timm.version.__version__
    import timm.data.constants as constants
    sys.modules["timm.data"].__dict__.update({k: v for k, v in vars(constants).items() if k.isupper()})
    import timm.models.vision_transformer as vit
    import timm.layers as layers
    return vit, layers


def randomize(model):
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith(".bias"):
                p.copy_(0.1 * r)
            elif name == "pos_embed":
                p.copy_(0.5 * r)
            elif name == "cls_token":
                p.copy_(r)
            else:  # weights: unit-variance outputs for unit-variance inputs
                fan_in = p[0].numel()
                p.copy_(r / np.sqrt(fan_in))


def write_safetensors(path, state):
    """timm's hub layout (safetensors.torch.save_file): F32 tensors in key order, 8-byte aligned header."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for key in sorted(state):
        a = state[key].detach().cpu().contiguous().numpy().astype("<f4")
        raw = a.tobytes()
        header[key] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src, commit = timm_source(sys.argv[1])
    vit, layers = import_timm(src)
    torch.manual_seed(0)
    config = dict(img_size=224, patch_size=16, embed_dim=192, depth=2, num_heads=3, mlp_ratio=4.0, qkv_bias=True,
                  num_classes=10, dynamic_img_size=True)
    model = vit.VisionTransformer(**config)
    randomize(model)
    model.eval()
    state = model.state_dict()
    assert tuple(state["blocks.0.attn.qkv.weight"].shape) == (576, 192)

    torch.save({"model": state}, os.path.join(HERE, NAME + ".pth"))
    write_safetensors(os.path.join(HERE, NAME + ".safetensors"), state)

    g = torch.Generator().manual_seed(7)
    inputs = {"": torch.randn(1, 3, 224, 224, generator=g), "_160x256": torch.randn(1, 3, 160, 256, generator=g)}
    with h5py.File(os.path.join(HERE, NAME + ".h5"), "w") as f:
        f.attrs["source"] = "huggingface/pytorch-image-models @ " + commit + " : timm/models/vision_transformer.py : " \
                            "VisionTransformer"
        f.attrs["config"] = json.dumps(config)
        f.attrs["weights"] = NAME + ".pth / " + NAME + ".safetensors"
        with torch.no_grad():
            for tag, x in inputs.items():
                f["input" + tag] = x.numpy()
                f["logits" + tag] = model(x).numpy()
            pos = layers.resample_abs_pos_embed(model.pos_embed, new_size=(10, 16), old_size=(14, 14),
                                                num_prefix_tokens=1)
            f["pos_embed_160x256"] = pos.numpy()
    # Replay: a fresh model from each written file gives the stored logits.
    fresh = vit.VisionTransformer(**config)
    fresh.load_state_dict(torch.load(os.path.join(HERE, NAME + ".pth"))["model"])
    fresh.eval()
    with h5py.File(os.path.join(HERE, NAME + ".h5"), "r") as f, torch.no_grad():
        for tag in inputs:
            y = fresh(torch.from_numpy(np.asarray(f["input" + tag])))
            assert np.array_equal(y.numpy(), np.asarray(f["logits" + tag])), tag
            print("logits" + tag, np.asarray(f["logits" + tag]).round(3).tolist())


if __name__ == "__main__":
    main()
