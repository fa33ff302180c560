#!/usr/bin/python3
"""RAVLT forward throughput: `rala bench` against the official PyTorch model, same runtime settings, interleaved.

    /usr/bin/python3 benchmarks/official_compare.py --official /path/to/qhfan/RALA/classfication/RALA.py \
        [--rala build/rala] [--threads 2] [--batch 8] [--image-size 224] [--rounds 7] [--iters 4] [--warmup 2] \
        [--dtype fp32|bf16] [--unfused]

Every round starts one process per contender — the official model (this script in worker mode, Debian's python3-torch,
the same LibTorch 1.13 and oneDNN as `rala`) and `rala bench` — with the same environment: OPENBLAS_NUM_THREADS=1,
GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000 (the two settings `rala` applies to
itself), OPENBLAS_CORETYPE = the OpenBLAS kernels `rala info` reports (rala selects them itself), the same intra-op thread count, forward under inference mode, the same batch of N(0, 1) images, --warmup
untimed iterations, then the median of --iters timed ones. The order alternates between rounds (A B, B A, ...), so
drift on a shared machine hits both alike. `--unfused` adds a third contender: `rala bench` with RALA_FUSED=0 (the
LibTorch expressions without the fused kernels). Prints one line per round, then the medians over rounds and the
ratios (ours / official in images/s; > 1 means ours is faster).

The official file imports timm, fvcore and einops; the worker installs minimal stand-ins for the few names it uses
(DropPath, trunc_normal_, register_model, _cfg, rearrange) so that only the model classes of the file run. Needs
nothing else from the official repository.
"""
import argparse
import csv
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types

RUNTIME_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000",
}


# ---------------------------------------------------------------------------------------------------------------------
# Worker: the official model
# ---------------------------------------------------------------------------------------------------------------------

def _parse_side(side):
    """'b (m n d) h w' -> [['b'], ['m', 'n', 'd'], ['h'], ['w']]."""
    groups, current, depth = [], None, 0
    for tok in side.replace("(", " ( ").replace(")", " ) ").split():
        if tok == "(":
            if depth:
                raise ValueError("nested parentheses in rearrange pattern")
            depth, current = 1, []
        elif tok == ")":
            if not depth:
                raise ValueError("unbalanced ')' in rearrange pattern")
            groups.append(current)
            depth, current = 0, None
        elif depth:
            current.append(tok)
        else:
            groups.append([tok])
    if depth:
        raise ValueError("unbalanced '(' in rearrange pattern")
    return groups


def rearrange(tensor, pattern, **sizes):
    """einops.rearrange for patterns without ellipsis or anonymous axes: reshape → permute → reshape, as einops does."""
    left, right = (s.strip() for s in pattern.split("->"))
    lg, rg = _parse_side(left), _parse_side(right)
    if len(lg) != tensor.dim():
        raise ValueError(f"rearrange: pattern '{left}' has {len(lg)} axes, tensor has {tensor.dim()}")
    known = dict(sizes)
    for group, extent in zip(lg, tensor.shape):
        unknown = [a for a in group if a not in known]
        prod = 1
        for a in group:
            if a in known:
                prod *= known[a]
        if len(unknown) > 1:
            raise ValueError(f"rearrange: cannot infer {unknown} in group {group}")
        if unknown:
            if extent % prod:
                raise ValueError(f"rearrange: {extent} not divisible by {prod}")
            known[unknown[0]] = extent // prod
        elif prod != extent:
            raise ValueError(f"rearrange: group {group} is {prod}, tensor axis is {extent}")
    elementary = [a for g in lg for a in g]
    order = [a for g in rg for a in g]
    if sorted(elementary) != sorted(order):
        raise ValueError("rearrange: both sides must name the same axes")
    x = tensor.reshape([known[a] for a in elementary])
    x = x.permute([elementary.index(a) for a in order])
    return x.reshape([eval_prod(known, g) for g in rg])


def eval_prod(known, group):
    p = 1
    for a in group:
        p *= known[a]
    return p


def install_stand_ins():
    """Minimal modules for the official file's imports (only the names it uses)."""
    import torch
    import torch.nn as nn

    class DropPath(nn.Module):
        """Stochastic depth per sample (identity in evaluation)."""

        def __init__(self, drop_prob=0.0):
            super().__init__()
            self.drop_prob = float(drop_prob or 0.0)

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
            return x * mask / keep

    def make(name, **attrs):
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        sys.modules[name] = mod
        return mod

    def unavailable(*_a, **_k):
        raise RuntimeError("fvcore stand-in: FLOP counting is not available in this benchmark")

    class Rearrange(nn.Module):
        def __init__(self, pattern, **sizes):
            super().__init__()
            self.pattern, self.sizes = pattern, sizes

        def forward(self, x):
            return rearrange(x, self.pattern, **self.sizes)

    make("timm")
    make("timm.models")
    make("timm.models.layers", DropPath=DropPath, trunc_normal_=torch.nn.init.trunc_normal_)
    make("timm.models.registry", register_model=lambda fn: fn)
    make("timm.models.vision_transformer", _cfg=lambda **kw: dict(kw))
    make("fvcore")
    make("fvcore.nn", FlopCountAnalysis=unavailable, flop_count_table=unavailable)
    make("einops", rearrange=rearrange)
    make("einops.layers")
    make("einops.layers.torch", Rearrange=Rearrange)


def run_official_worker(args):
    import torch

    install_stand_ins()
    spec = importlib.util.spec_from_file_location("official_rala", args.official)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    factory = {"ravlt_t": "RAVLT_T", "ravlt_s": "RAVLT_S", "ravlt_b": "RAVLT_B", "ravlt_l": "RAVLT_L"}[args.model]
    model = getattr(module, factory)().eval()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = model.to(dtype)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size).to(dtype)
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            model(x)
        for _ in range(args.iters):
            t0 = time.perf_counter()
            model(x)
            times.append(1e3 * (time.perf_counter() - t0))
    print(json.dumps({"median_ms": statistics.median(times), "times_ms": times, "threads": torch.get_num_threads()}))


# ---------------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------------

def child_env(extra=None):
    env = dict(os.environ)
    env.update(RUNTIME_ENV)
    env.pop("OMP_NUM_THREADS", None)  # both set their thread count through the API (torch.set_num_threads, --threads)
    if extra:
        env.update(extra)
    return env


def run_official(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--official", args.official, "--threads",
           str(args.threads), "--batch", str(args.batch), "--image-size", str(args.image_size), "--iters",
           str(args.iters), "--warmup", str(args.warmup), "--dtype", args.dtype, "--model", args.model, "--seed",
           str(args.seed)]
    out = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"official model failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"], {}


def run_rala(args, tmpdir, tag, fused=True):
    h5 = os.path.join(tmpdir, f"{tag}.h5")
    cmd = [args.rala, "bench", "--model", args.model, "--attn-pattern", "RRSS", "--batch-size", str(args.batch),
           "--image-size", str(args.image_size), "--threads", str(args.threads), "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--rounds", "1", "--dtype", args.dtype, "--seed", str(args.seed), "--out",
           h5, "--overwrite", "--quiet"]
    out = subprocess.run(cmd, env=child_env(None if fused else {"RALA_FUSED": "0"}), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"rala bench failed (exit {out.returncode}): {out.stderr.strip()}")
    with open(os.path.splitext(h5)[0] + ".csv", newline="") as f:
        row = next(csv.DictReader(f))
    return float(row["latency_median_ms"]), {"gemm_ratio": float(row["gemm_ratio"])}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="path of qhfan/RALA classfication/RALA.py")
    p.add_argument("--rala", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "rala"))
    p.add_argument("--model", default="ravlt_t", choices=["ravlt_t", "ravlt_s", "ravlt_b", "ravlt_l"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unfused", action="store_true", help="also time rala with RALA_FUSED=0")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not os.path.isfile(args.official):
        sys.exit(f"--official: '{args.official}' is not a file (expected qhfan/RALA's classfication/RALA.py)")
    for name, value in (("--threads", args.threads), ("--batch", args.batch), ("--image-size", args.image_size),
                        ("--rounds", args.rounds), ("--iters", args.iters)):
        if value <= 0:
            sys.exit(f"{name} must be positive, got {value}")
    if args.worker:
        run_official_worker(args)
        return
    args.rala = os.path.abspath(args.rala)
    if not os.access(args.rala, os.X_OK):
        sys.exit(f"--rala: '{args.rala}' is not an executable (build the project first)")

    # `rala` re-executes itself with OPENBLAS_CORETYPE when OpenBLAS fell back to generic kernels on this CPU (see
    # experiments/runtime.h); the official side gets the same kernels, so that the comparison stays one of model code.
    if "OPENBLAS_CORETYPE" not in os.environ:
        info = subprocess.run([args.rala, "info"], capture_output=True, text=True).stdout
        core = re.search(r"DYNAMIC_ARCH\s+(?:NO_AFFINITY\s+)?(\w+)\s+MAX_THREADS", info)
        if core:
            RUNTIME_ENV["OPENBLAS_CORETYPE"] = core.group(1)
    contenders = [("official", lambda tmp, r: run_official(args)),
                  ("rala", lambda tmp, r: run_rala(args, tmp, f"fused{r}"))]
    if args.unfused:
        contenders.append(("rala_unfused", lambda tmp, r: run_rala(args, tmp, f"unfused{r}", fused=False)))
    print(f"# {args.model} RRSS {args.image_size}² batch {args.batch} {args.dtype}, {args.threads} threads, "
          f"{args.rounds} rounds × ({args.warmup} warm-up + median of {args.iters}); env "
          + " ".join(f"{k}={v}" for k, v in RUNTIME_ENV.items()))
    print(f"# load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    ms = {name: [] for name, _ in contenders}
    gemm = []
    with tempfile.TemporaryDirectory(prefix="rala_official_compare_") as tmp:
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else list(reversed(contenders))
            line = []
            for name, fn in order:
                t, extra = fn(tmp, r)
                ms[name].append(t)
                if name == "rala":
                    gemm.append(extra["gemm_ratio"])
                line.append(f"{name} {t:8.1f} ms ({1e3 * args.batch / t:6.2f} img/s)")
            print(f"round {r + 1}: " + " | ".join(line)
                  + f" | ours/official {ms['official'][-1] / ms['rala'][-1]:.3f}", flush=True)
    print(f"# load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\n| contender | median ms | images/s | best ms |")
    print("|---|---|---|---|")
    for name, _ in contenders:
        med = statistics.median(ms[name])
        print(f"| {name} | {med:.1f} | {1e3 * args.batch / med:.2f} | {min(ms[name]):.1f} |")
    per_round = [o / f for o, f in zip(ms["official"], ms["rala"])]
    print(f"\nours / official (images/s): ratio of medians {statistics.median(ms['official']) / statistics.median(ms['rala']):.3f}, "
          f"median of per-round ratios {statistics.median(per_round):.3f}, range {min(per_round):.3f} – {max(per_round):.3f}")
    if args.unfused:
        pr = [u / f for u, f in zip(ms["rala_unfused"], ms["rala"])]
        print(f"fused / unfused (images/s): median of per-round ratios {statistics.median(pr):.3f}")
        po = [o / u for o, u in zip(ms["official"], ms["rala_unfused"])]
        print(f"unfused / official (images/s): median of per-round ratios {statistics.median(po):.3f}")
    print(f"rala fraction of the same-process GEMM rate: median {statistics.median(gemm):.3f}")


if __name__ == "__main__":
    main()
