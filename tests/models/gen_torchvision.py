#!/usr/bin/python3
"""Export torchvision reference models to ONNX + reference test data for medq.

Usage (needs Debian's python3-torch / torchvision / onnx, i.e. /usr/bin/python3):

    /usr/bin/python3 tests/models/gen_torchvision.py OUT_DIR [--models a,b] \
        [--opsets 13,17] [--force] [--batch 2] [--threads N]

For every (model, opset) pair this writes

    OUT_DIR/<name>_op<opset>.onnx
    OUT_DIR/<name>_op<opset>/test_data_set_0/input_0.pb    (float32 [B,3,224,224])
    OUT_DIR/<name>_op<opset>/test_data_set_0/output_0.pb   (float32 [B,1000], torch reference)

(ONNX backend-test layout) and updates OUT_DIR/manifest.json with op types, sizes,
output statistics and timings.

Default opsets (when --opsets is not given):
    every model at opset 13 (the widest-supported baseline), plus opset 17 for
      convnext_tiny, vit_b_16      -> LayerNormalization is emitted as a single op
                                      (opset <17 decomposes it to ReduceMean/Sub/Pow/Sqrt/Div)
      mobilenet_v3_large           -> HardSwish (opset >=14; at 13 it is HardSigmoid+Mul)
With --opsets, every selected model is exported at every listed opset.
torch 1.13 can export up to opset 17.  If an export fails at the requested opset the
script falls back to the highest lower opset that works (down to 9) and says so;
the files are then named after the opset actually used.

Models are built with weights=None under torch.manual_seed(0) and then
"de-degenerated" so the comparison is meaningful (random-init networks otherwise
give near-constant logits):
  * BatchNorm: weight ~ U(0.5, 1.5), bias ~ N(0, 0.1); running stats are then
    calibrated with one pass (cumulative average, only the BN layers in train mode,
    Dropout/StochasticDepth in eval) over a seeded random batch of 16, then jittered:
    running_var *= U(0.8, 1.2) (stays positive), running_mean += N(0, 0.05)*std --
    so activations neither explode nor collapse.
  * LayerNorm: weight ~ U(0.5, 1.5), bias ~ N(0, 0.1).
  * ConvNeXt layer_scale (init 1e-6, which makes every block ~identity) ~ U(0.1, 0.5).
  * ViT class_token (init 0) ~ N(0, 0.02); zero-initialised Linear layers (the ViT
    head) are re-initialised N(0, 1/sqrt(fan_in)), bias N(0, 0.1).
The output std, and the std of the difference between the batch samples, are checked
to be non-tiny (a warning is printed otherwise).
Existing outputs are skipped (idempotent) unless --force.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import torchvision

ALL_MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "densenet121",
    "convnext_tiny",
    "vit_b_16",
]
EXTRA_OPSET17 = {"convnext_tiny", "vit_b_16", "mobilenet_v3_large"}
IMG = 224
MIN_OPSET = 9


def build_model(name):
    torch.manual_seed(0)
    ctor = getattr(torchvision.models, name)
    model = ctor(weights=None)
    return model


@torch.no_grad()
def de_degenerate(model, seed):
    g = torch.Generator().manual_seed(seed)

    def uni(t, lo, hi):
        return torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo

    def nrm(t, std):
        return torch.randn(t.shape, generator=g, dtype=t.dtype) * std

    bns = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            if m.affine:
                m.weight.copy_(uni(m.weight, 0.5, 1.5))
                m.bias.copy_(nrm(m.bias, 0.1))
            bns.append(m)
        elif isinstance(m, torch.nn.LayerNorm):
            if m.elementwise_affine:
                m.weight.copy_(uni(m.weight, 0.5, 1.5))
                m.bias.copy_(nrm(m.bias, 0.1))
        elif isinstance(m, torch.nn.Linear):
            if float(m.weight.abs().max()) == 0.0:
                m.weight.copy_(nrm(m.weight, 1.0 / np.sqrt(m.in_features)))
                if m.bias is not None:
                    m.bias.copy_(nrm(m.bias, 0.1))
        if hasattr(m, "layer_scale") and isinstance(m.layer_scale, torch.nn.Parameter):
            m.layer_scale.copy_(uni(m.layer_scale, 0.1, 0.5))
        if hasattr(m, "class_token") and isinstance(m.class_token, torch.nn.Parameter):
            m.class_token.copy_(nrm(m.class_token, 0.02))

    if bns:
        # Calibrate running statistics with one cumulative train-mode pass.
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        # Only the BN layers go to train mode: Dropout / StochasticDepth stay in eval so
        # the calibrated statistics match the eval-mode (exported) network.
        model.eval()
        for m in bns:
            m.train()
        calib = torch.randn(16, 3, IMG, IMG, generator=g)
        model(calib)
        for m in bns:
            # jitter relative to the calibrated std so tiny-variance channels don't blow up
            m.running_mean.add_(nrm(m.running_mean, 0.05) * m.running_var.sqrt())
            m.running_var.mul_(uni(m.running_var, 0.8, 1.2))
            m.momentum = 0.1
    model.eval()
    return model


def op_types(path):
    m = onnx.load(path, load_external_data=False)
    ops = set()

    def walk(graph):
        for n in graph.node:
            ops.add(n.op_type if n.domain in ("", "ai.onnx") else n.domain + "." + n.op_type)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        walk(sg)

    walk(m.graph)
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    return sorted(ops), opset, len(m.graph.node)


def export(model, x, path, opset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            x,
            path,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            do_constant_folding=True,
        )


def paths(out_dir, name, opset):
    stem = "%s_op%d" % (name, opset)
    ds = os.path.join(out_dir, stem, "test_data_set_0")
    return stem, os.path.join(out_dir, stem + ".onnx"), ds


def done(out_dir, name, opset):
    _, onnx_path, ds = paths(out_dir, name, opset)
    return all(os.path.exists(p) for p in
               (onnx_path, os.path.join(ds, "input_0.pb"), os.path.join(ds, "output_0.pb")))


def write_pb(arr, path, name):
    t = onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name=name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def process(out_dir, name, opset, batch, force, manifest):
    stem, onnx_path, ds = paths(out_dir, name, opset)
    if not force and done(out_dir, name, opset):
        print("[skip] %s: already present" % stem, flush=True)
        return
    t0 = time.time()
    model = de_degenerate(build_model(name), seed=1)
    rng = np.random.default_rng(1234)
    x_np = rng.standard_normal((batch, 3, IMG, IMG), dtype=np.float32)
    x = torch.from_numpy(x_np)
    with torch.no_grad():
        y = model(x).numpy().astype(np.float32)

    ystd = float(y.std())
    dstd = float((y[0] - y[-1]).std()) if batch > 1 else float("nan")
    ok = np.isfinite(y).all() and ystd > 1e-2 and (batch < 2 or dstd > 1e-2 * ystd)
    if not ok:
        print("  WARNING %s: degenerate output (std=%.3g, sample-diff std=%.3g, finite=%s)"
              % (stem, ystd, dstd, np.isfinite(y).all()), flush=True)

    # Export, falling back to lower opsets on failure.
    used = None
    for op in range(opset, MIN_OPSET - 1, -1):
        stem_u, onnx_u, ds_u = paths(out_dir, name, op)
        try:
            export(model, x[:1], onnx_u, op)
            used = op
            break
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print("  EXPORT FAILED %s at opset %d: %s" % (name, op, msg[:300]), flush=True)
            if os.path.exists(onnx_u):
                os.remove(onnx_u)
    if used is None:
        print("[FAIL] %s: no opset in [%d, %d] exports" % (name, MIN_OPSET, opset), flush=True)
        return
    if used != opset:
        print("  FALLBACK %s: requested opset %d, exported at opset %d" % (name, opset, used),
              flush=True)
    stem, onnx_path, ds = stem_u, onnx_u, ds_u
    onnx.checker.check_model(onnx_path)

    os.makedirs(ds, exist_ok=True)
    write_pb(x_np, os.path.join(ds, "input_0.pb"), "input")
    write_pb(y, os.path.join(ds, "output_0.pb"), "output")

    ops, opset_imp, nnodes = op_types(onnx_path)
    size = os.path.getsize(onnx_path)
    dt = time.time() - t0
    print("[done] %s: %.1fs, %.1f MB, %d nodes, opset_import=%s, out std=%.3f, "
          "sample-diff std=%.3f%s" % (stem, dt, size / 1e6, nnodes, opset_imp, ystd, dstd,
                                       "" if used == opset else " (FALLBACK from %d)" % opset),
          flush=True)
    print("  ops: %s" % " ".join(ops), flush=True)
    manifest[stem] = {
        "model": name,
        "requested_opset": opset,
        "opset": used,
        "onnx": os.path.basename(onnx_path),
        "bytes": size,
        "nodes": nnodes,
        "op_types": ops,
        "batch": batch,
        "input_shape": list(x_np.shape),
        "output_shape": list(y.shape),
        "output_std": ystd,
        "sample_diff_std": dstd,
        "seconds": round(dt, 2),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--models", default=",".join(ALL_MODELS),
                    help="comma-separated subset of: " + ",".join(ALL_MODELS))
    ap.add_argument("--opsets", default=None,
                    help="comma-separated opsets applied to every model "
                         "(default: 13 for all, plus 17 for %s)" % ",".join(sorted(EXTRA_OPSET17)))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--force", action="store_true", help="regenerate even if present")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in ALL_MODELS]
    if bad:
        ap.error("unknown model(s): %s" % ",".join(bad))
    os.makedirs(args.out_dir, exist_ok=True)

    jobs = []
    for m in models:
        if args.opsets:
            ops = [int(o) for o in args.opsets.split(",") if o.strip()]
        else:
            ops = [13] + ([17] if m in EXTRA_OPSET17 else [])
        jobs += [(m, o) for o in ops]

    mpath = os.path.join(args.out_dir, "manifest.json")
    manifest = {}
    if os.path.exists(mpath):
        try:
            with open(mpath) as f:
                manifest = json.load(f)
        except ValueError:
            manifest = {}

    print("torch %s, torchvision %s, onnx %s; %d job(s)" %
          (torch.__version__, torchvision.__version__, onnx.__version__, len(jobs)), flush=True)
    t_all = time.time()
    for m, o in jobs:
        process(args.out_dir, m, o, args.batch, args.force, manifest)
        with open(mpath, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
    print("total %.1fs" % (time.time() - t_all), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
