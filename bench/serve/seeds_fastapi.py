#!/usr/bin/python3
"""The seeds' serving stack (FastAPI + uvicorn + PyTorch, "POST /predict" with an UploadFile)
rebuilt from Debian packages, for the `medq serve` load comparison (bench/serve/run_load.sh).

torch cannot load ONNX and onnx2torch is not packaged, so the fp32 ONNX model is executed by a
small torch.nn.Module that walks the ONNX graph with torch.nn.functional ops (Conv, Relu, Clip,
MaxPool, Add, GlobalAveragePool, Flatten, Gemm, Reshape): the same weights, computed by PyTorch.
`--check IMAGE LOGITS...` verifies the logits against PyTorch's reference values first.

  MODEL=brain_resnet18.onnx TORCH_THREADS=2 /usr/bin/python3 seeds_fastapi.py --port 8100
"""
import argparse
import io
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from PIL import Image


class OnnxTorch(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        m = onnx.load(path)
        g = m.graph
        self.nodes = [(n.op_type, list(n.input), list(n.output),
                       {a.name: helper.get_attribute_value(a) for a in n.attribute}) for n in g.node]
        self.params = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in g.initializer}
        self.input = g.input[0].name
        self.output = g.output[0].name
        self.meta = {p.key: p.value for p in m.metadata_props}

    @staticmethod
    def _sym_pads(p):
        if p[0] != p[2] or p[1] != p[3]:
            raise NotImplementedError("asymmetric pads")
        return p[:2]

    def forward(self, x):
        env = dict(self.params)
        env[self.input] = x
        for op, ins, outs, a in self.nodes:
            v = [env[i] if i else None for i in ins]
            if op == "Conv":
                y = F.conv2d(v[0], v[1], v[2] if len(v) > 2 else None, stride=a.get("strides", [1, 1]),
                             padding=self._sym_pads(a.get("pads", [0, 0, 0, 0])),
                             dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
            elif op == "Relu":
                y = F.relu(v[0])
            elif op == "Clip":
                lo = float(v[1]) if len(v) > 1 and v[1] is not None else a.get("min", -3.4e38)
                hi = float(v[2]) if len(v) > 2 and v[2] is not None else a.get("max", 3.4e38)
                y = torch.clamp(v[0], lo, hi)
            elif op == "MaxPool":
                y = F.max_pool2d(v[0], a["kernel_shape"], a.get("strides", [1, 1]),
                                 self._sym_pads(a.get("pads", [0, 0, 0, 0])))
            elif op == "Add":
                y = v[0] + v[1]
            elif op == "GlobalAveragePool":
                y = v[0].mean((2, 3), keepdim=True)
            elif op == "Flatten":
                y = torch.flatten(v[0], a.get("axis", 1))
            elif op == "Reshape":
                shape = [int(s) for s in v[1].tolist()]
                shape = [v[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
                y = v[0].reshape(shape)
            elif op == "Gemm":
                b = v[1].t() if a.get("transB", 0) else v[1]
                aa = v[0].t() if a.get("transA", 0) else v[0]
                y = a.get("alpha", 1.0) * (aa @ b)
                if len(v) > 2 and v[2] is not None:
                    y = y + a.get("beta", 1.0) * v[2]
            else:
                raise NotImplementedError("op " + op)
            env[outs[0]] = y
        return env[self.output]


MODEL_PATH = os.environ.get("MODEL", "/work/shared/data/models/brain_resnet18.onnx")
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
MODEL = OnnxTorch(MODEL_PATH).eval()
import json as _json  # noqa: E402

LABELS = _json.loads(MODEL.meta.get("labels", "[]"))
PRE = _json.loads(MODEL.meta["preprocess"])
MEAN = np.array(PRE["mean"], np.float32).reshape(3, 1, 1)
STD = np.array(PRE["std"], np.float32).reshape(3, 1, 1)


def preprocess(data: bytes) -> torch.Tensor:
    img = Image.open(io.BytesIO(data)).convert("RGB").resize(tuple(PRE["resize"]), Image.BILINEAR)
    x = np.asarray(img, np.float32).transpose(2, 0, 1) / np.float32(255)
    return torch.from_numpy(((x - MEAN) / STD)[None].astype(np.float32))


def predict_bytes(data: bytes):
    with torch.inference_mode():
        logits = MODEL(preprocess(data))[0]
    p = torch.softmax(logits, 0)
    top = int(p.argmax())
    return {"labels": LABELS, "probabilities": p.tolist(), "logits": logits.tolist(),
            "top_class": LABELS[top] if top < len(LABELS) else str(top), "top_probability": float(p[top])}


from fastapi import FastAPI, File, HTTPException, UploadFile  # noqa: E402

app = FastAPI()


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/predict")
def predict(image: UploadFile = File(...)):
    try:
        return predict_bytes(image.file.read())
    except Exception as e:  # noqa: BLE001 - the seeds' error model: 400 on a bad upload
        raise HTTPException(status_code=400, detail=str(e))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--check", nargs="+", help="IMAGE LOGIT... : verify against reference logits and exit")
    args = ap.parse_args()
    if args.check:
        got = predict_bytes(open(args.check[0], "rb").read())["logits"]
        want = [float(v) for v in args.check[1:]]
        diff = max(abs(g - w) for g, w in zip(got, want))
        print(f"seeds torch stack: max |logit - reference| = {diff:.2e}")
        sys.exit(0 if diff < 1e-3 else 1)
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
