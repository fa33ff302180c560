#!/usr/bin/python3
"""Goldens of the official DeiT ports of InLine and Agent attention: how the cls token enters these mixers.

The attention classes are read from snapshots of the official repositories given as arguments (a folder holding the
repository's files, or its git directory, from which the one file is read with `git show HEAD:<path>`); only the class
definition is executed (the modules' timm imports are not needed by it), nothing of it is committed. Debian's python3
with torch 1.13, numpy and h5py:

    /usr/bin/python3 tests/data/make_deit_port_goldens.py /path/to/InLine[/.git] /path/to/Agent-Attention[/.git]

Both ports take x (B, 1 + N, C) with the cls token first and read the patch grid as h = w = int(sqrt(1 + N)): a square
grid, here 8x8 (N = 64). C = 64, 2 heads, batch 2, every parameter 0.2*randn, fp32, eval, fixed seeds; each file is
replayed (fresh module + stored state dict and input) before it is kept.

  inline_deit_attention.h5  LeapLabTHU/InLine models/inline_deit.py InLineAttention: state_dict/ (qkv (192,64),
                            proj, residual.0 (64,32,1), residual.2 (576,32,1)); input, output (2,65,64)
  agent_deit_attention.h5   LeapLabTHU/Agent-Attention agent_transformer/models/agent_deit.py AgentAttention, 9 agents
                            (8 -> 3 pooling: overlapping bins), window 8: state_dict/ (qkv, proj, dwc (64,1,3,3),
                            an/na_bias (2,9,7,7), ah/aw/ha/wa_bias, ac_bias (1,2,9,1), ca_bias (1,2,1,9)); input, output
"""
import ast
import json
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def read_source(repo, path):
    if os.path.isfile(os.path.join(repo, path)):
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        with open(os.path.join(repo, path)) as f:
            return f.read(), commit or "unknown"
    run = lambda *a: subprocess.run(["git", "--git-dir", repo, *a], capture_output=True, text=True, check=True).stdout
    return run("show", "HEAD:" + path), run("rev-parse", "HEAD").strip()


def load_class(source, name):
    """Executes only the definition of class `name` from a module's source."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    namespace = {"torch": torch, "nn": nn, "F": F, "math": math,
                 "trunc_normal_": lambda t, std=1.0: nn.init.trunc_normal_(t, std=std)}
    exec(compile(ast.Module(body=[node], type_ignores=[]), name, "exec"), namespace)
    return namespace[name]


def make(path, module, config, source):
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    module.eval()
    x = torch.randn(2, 65, 64, generator=g)
    with torch.no_grad():
        y = module(x)
    with h5py.File(path, "w") as f:
        f.attrs["source"] = source
        f.attrs["config"] = json.dumps(config)
        f.attrs["layout"] = "input, output: (B, 1 + N, C), the cls token first, then the 8x8 grid in raster order"
        for k, v in module.state_dict().items():
            f["state_dict/" + k] = v.numpy()
        f["input"] = x.numpy()
        f["output"] = y.numpy()
    return y


def replay(path, cls, config):
    fresh = cls(**config)
    with h5py.File(path, "r") as f:
        fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in f["state_dict"].items()})
        fresh.eval()
        with torch.no_grad():
            y = fresh(torch.from_numpy(np.asarray(f["input"])))
        assert np.array_equal(y.numpy(), np.asarray(f["output"])), path


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    inline_repo, agent_repo = sys.argv[1:]

    src, commit = read_source(inline_repo, "models/inline_deit.py")
    InLine = load_class(src, "InLineAttention")
    config = dict(dim=64, num_heads=2, qkv_bias=True, window=8)
    torch.manual_seed(0)
    path = os.path.join(HERE, "inline_deit_attention.h5")
    make(path, InLine(**config), config, "LeapLabTHU/InLine @ " + commit + " : models/inline_deit.py : InLineAttention")
    replay(path, InLine, config)

    src, commit = read_source(agent_repo, "agent_transformer/models/agent_deit.py")
    Agent = load_class(src, "AgentAttention")
    config = dict(dim=64, num_heads=2, qkv_bias=True, agent_num=9, window=8)
    torch.manual_seed(0)
    path = os.path.join(HERE, "agent_deit_attention.h5")
    make(path, Agent(**config), config,
         "LeapLabTHU/Agent-Attention @ " + commit + " : agent_transformer/models/agent_deit.py : AgentAttention")
    replay(path, Agent, config)
    print("written: inline_deit_attention.h5, agent_deit_attention.h5")


if __name__ == "__main__":
    main()
