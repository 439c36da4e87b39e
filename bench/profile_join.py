#!/usr/bin/python3
"""Per-convolution comparison of medq and ONNX Runtime on one model.

usage: /usr/bin/python3 bench/profile_join.py MODEL.onnx MEDQ.json ORT_PROFILE.json RUNS
  MEDQ.json:        `medq bench MODEL --profile --json ...` (its "profile_nodes": 5 profiled runs, averaged)
  ORT_PROFILE.json: bench/ort/ort_profile.js output; RUNS = its --iters + 3 (every run is in the trace)

The engines fuse and name nodes differently, so convolutions are joined by (input C x H x W, weight
shape), the key both profiles can name: per key, medq's and ORT's summed milliseconds and counts,
largest medq excess first. Needs python3-onnx (shape inference for medq's original node names).
"""
import collections
import json
import sys

import onnx
from onnx import shape_inference


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    model, mq_path, ort_path, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    m = shape_inference.infer_shapes(onnx.load(model))
    shp = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shp[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shp[t.name] = list(t.dims)
    key_of = {n.name: (tuple(shp.get(n.input[0], [])[1:]), tuple(shp[n.input[1]]))
              for n in m.graph.node if n.op_type == "Conv"}
    medq = collections.defaultdict(list)
    for n in json.load(open(mq_path)).get("profile_nodes", []):
        if n["name"] in key_of:
            medq[key_of[n["name"]]].append(n["ms"])
    ort = collections.defaultdict(list)
    for e in json.load(open(ort_path)):
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        a = e["args"]
        if a.get("op_name") not in ("Conv", "FusedConv"):
            continue
        ins = [list(x.values())[0] for x in a["input_type_shape"]]
        ort[(tuple(ins[0][1:]), tuple(ins[1]))].append(e["dur"] / 1000 / runs)
    rows = []
    for k in set(medq) | set(ort):
        a, b = sum(medq.get(k, [])), sum(ort.get(k, []))
        rows.append((a - b, k, len(medq.get(k, [])), round(len(ort.get(k, [])) / runs), a, b))
    rows.sort(reverse=True)
    print("%-44s %4s %4s %9s %9s %9s" % ("conv (in CxHxW, W shape)", "medq", "ort", "medq ms", "ort ms", "diff"))
    for d, k, nm, no, a, b in rows:
        print("%-44s %4d %4d %9.3f %9.3f %+9.3f" % (str(k)[:44], nm, no, a, b, d))
    print("total: medq %.3f ms, ort %.3f ms (ORT's profiler adds per-node overhead)" %
          (sum(r[4] for r in rows), sum(r[5] for r in rows)))


if __name__ == "__main__":
    main()
