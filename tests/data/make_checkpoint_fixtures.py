#!/usr/bin/python3
"""Writes the checkpoint fixtures of tests/models/checkpoint_test.cpp with the real torch.save.

Run with Debian's interpreter (it needs python3-torch and python3-h5py; only this generator does):
    /usr/bin/python3 tests/data/make_checkpoint_fixtures.py

Outputs (next to this script):
  checkpoint_official_micro.pth  the layout of an official RALA training checkpoint (RAVLT_T.pth …):
                                 {'model': od, 'model_ema': od_ema, 'optimizer', 'lr_scheduler', 'epoch', 'scaler',
                                  'args': argparse.Namespace, 'max_accuracy'}; od = the micro RRSS state dict of
                                 ravlt_micro_rrss.h5 (group state_dict, dtypes kept), od_ema = od with every floating
                                 tensor × 0.5.
  checkpoint_bare_micro.pth      torch.save(od): the state dict itself at the top level.
  checkpoint_views.pth           an OrderedDict of tensors whose values are formulas the C++ test recomputes:
                                   'slice'      float32 (10,)   = arange(100)[10:20] · 0.25       (storage offset 10)
                                   'transposed' float32 (4, 3)  = (arange(12).view(3, 4) · 0.5).t() (strides (1, 4))
                                   'float64'    float64 (2, 3)  = arange(6) / 3 − 1
                                   'bfloat16'   bfloat16 (5,)   = arange(5) · 0.5 − 1              (exact in bf16)
                                   'shared'     float32 (2, 2)  = arange(100)[40:44].view(2, 2) · 0.25 (same storage
                                                                  as 'slice')
                                   'int32'      int32 (3,)      = [−2, 0, 7]
                                   'bool'       bool (4,)       = [True, False, False, True]
                                   'half'       float16 (3,)    = [0.5, −1.5, 2]
"""
import argparse
import collections
import os

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def micro_state_dict():
    od = collections.OrderedDict()
    with h5py.File(os.path.join(HERE, "ravlt_micro_rrss.h5"), "r") as f:
        group = f["state_dict"]
        for key in sorted(group.keys()):
            od[key] = torch.from_numpy(np.array(group[key][()]))
    # Like a real model.state_dict(): an OrderedDict carrying a `_metadata` attribute (pickled through BUILD).
    od._metadata = collections.OrderedDict([("", {"version": 1}), ("patch_embed", {"version": 1})])
    return od


def main():
    od = micro_state_dict()
    assert od["layers.0.downsample.norm.num_batches_tracked"].dtype == torch.int64
    od_ema = collections.OrderedDict(
        (k, v * 0.5 if v.is_floating_point() else v.clone()) for k, v in od.items())
    checkpoint = {
        "model": od,
        "model_ema": od_ema,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0, 1]}]},
        "lr_scheduler": {"last_epoch": 3},
        "epoch": 3,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model="RAVLT_T", lr=0.001),
        "max_accuracy": 81.5,
    }
    torch.save(checkpoint, os.path.join(HERE, "checkpoint_official_micro.pth"))
    torch.save(od, os.path.join(HERE, "checkpoint_bare_micro.pth"))

    big = torch.arange(100, dtype=torch.float32) * 0.25
    views = collections.OrderedDict()
    views["slice"] = big[10:20]
    views["transposed"] = (torch.arange(12, dtype=torch.float32).view(3, 4) * 0.5).t()
    views["float64"] = torch.arange(6, dtype=torch.float64).view(2, 3) / 3 - 1
    views["bfloat16"] = (torch.arange(5, dtype=torch.float32) * 0.5 - 1).to(torch.bfloat16)
    views["shared"] = big[40:44].view(2, 2)
    views["int32"] = torch.tensor([-2, 0, 7], dtype=torch.int32)
    views["bool"] = torch.tensor([True, False, False, True])
    views["half"] = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float16)
    assert views["slice"].storage_offset() == 10 and not views["transposed"].is_contiguous()
    torch.save(views, os.path.join(HERE, "checkpoint_views.pth"))


if __name__ == "__main__":
    main()
