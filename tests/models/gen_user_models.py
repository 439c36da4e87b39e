#!/usr/bin/python3
"""Fixtures of models as users bring them: exported with Debian's PyTorch, no metadata_props.

  nhwc_gray_sigmoid.onnx  input [N,40,48,1] (NHWC, one channel, H != W), head Linear(2) + Sigmoid
                          (Keras/tf2onnx style)
  binary1_sigmoid.onnx    input [N,3,32,32], one output after a Sigmoid (binary)
  multilabel_sigmoid.onnx input [N,3,32,32], 4 independent sigmoid outputs
  softmax3.onnx           input [N,1,28,28], Softmax over 3 classes at the end
  logits1.onnx            input [N,3,32,32], one raw logit (binary, BCEWithLogits style)
  keras_cnn240.onnx       a Keras-style 240x240 single-channel CNN (benchmarks only)

plus ds_<model>/{train,test}/<class>/NN.png (small image folders with split subfolders, for
eval/validate/quantize), two test images (rgb.png 70x55, gray.png 61x45) and expected.json: for every model, the
outputs PyTorch computes on the pixels that Pillow decodes and resizes (bilinear, x / 255, no
mean/std: what medq must assume without metadata). Usage: gen_user_models.py OUT_DIR
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image


class Body(nn.Module):
    def __init__(self, cin, nout, head):
        super().__init__()
        self.conv = nn.Conv2d(cin, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, nout)
        self.head = head

    def features(self, x):
        x = torch.relu(self.conv(x))
        x = self.pool(x)
        x = torch.relu(self.conv2(x))
        return self.gap(x).flatten(1)

    def forward(self, x):
        y = self.fc(self.features(x))
        if self.head == "sigmoid":
            return torch.sigmoid(y)
        if self.head == "softmax":
            return torch.softmax(y, dim=1)
        return y


class Nhwc(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):  # x: [N, H, W, C]
        return self.body(x.permute(0, 3, 1, 2))


def pixels(path, mode, w, h):
    img = Image.open(path).convert(mode).resize((w, h), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / np.float32(255)
    return a if a.ndim == 3 else a[:, :, None]  # HWC


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    rng = np.random.default_rng(3)
    # Smooth images with texture, so that the bilinear resize matters.
    yy, xx = np.mgrid[0:55, 0:70]
    rgb = np.stack([(xx * 3) % 256, (yy * 4) % 256, (xx + yy) * 2 % 256], -1) + rng.integers(0, 40, (55, 70, 3))
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(os.path.join(out, "rgb.png"))
    yy, xx = np.mgrid[0:45, 0:61]
    gray = (xx * 4 + yy * 2) % 256 + rng.integers(0, 30, (45, 61))
    Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L").save(os.path.join(out, "gray.png"))

    classes = {"nhwc_gray_sigmoid": ["benign", "malignant"], "binary1_sigmoid": ["neg", "pos"],
               "multilabel_sigmoid": ["a", "b", "c", "d"], "softmax3": ["x", "y", "z"], "logits1": ["neg", "pos"]}
    specs = [
        # name, channels, H, W, outputs, head, nhwc
        ("nhwc_gray_sigmoid", 1, 40, 48, 2, "sigmoid", True),
        ("binary1_sigmoid", 3, 32, 32, 1, "sigmoid", False),
        ("multilabel_sigmoid", 3, 32, 32, 4, "sigmoid", False),
        ("softmax3", 1, 28, 28, 3, "softmax", False),
        ("logits1", 3, 32, 32, 1, "none", False),
    ]
    expected = {}
    for name, c, h, w, k, head, nhwc in specs:
        body = Body(c, k, head)
        with torch.no_grad():  # spread the outputs so that the heads are not saturated or flat
            body.fc.weight.mul_(4.0)
        model = (Nhwc(body) if nhwc else body).eval()
        shape = (1, h, w, c) if nhwc else (1, c, h, w)
        path = os.path.join(out, name + ".onnx")
        torch.onnx.export(model, torch.zeros(shape), path, opset_version=13, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
        img = "gray.png" if c == 1 else "rgb.png"
        x = pixels(os.path.join(out, img), "L" if c == 1 else "RGB", w, h)  # HWC
        xt = torch.from_numpy(x[None] if nhwc else x.transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            y = model(xt).numpy()[0]
        # A batch of 3 rows as a .npy (the same image, then perturbed copies) for batched input tests.
        xb = np.stack([xt.numpy()[0], xt.numpy()[0] * 0.5, 1 - xt.numpy()[0]]).astype(np.float32)
        np.save(os.path.join(out, name + "_batch3.npy"), xb)
        with torch.no_grad():
            yb = model(torch.from_numpy(xb)).numpy()
        for split, count in (("train", 6), ("test", 5)):
            for ci, cls in enumerate(classes[name]):
                d = os.path.join(out, "ds_" + name, split, cls)
                os.makedirs(d, exist_ok=True)
                for i in range(count):
                    hh, ww = int(rng.integers(36, 60)), int(rng.integers(40, 70))
                    base = rng.integers(0, 256, (hh, ww, 3)).astype(np.float64) * 0.6 + 40 * ci
                    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
                    (im.convert("L") if c == 1 else im).save(os.path.join(d, "%02d.png" % i))
        expected[name] = {"classes": classes[name], "image": img, "outputs": y.tolist(), "batch3_outputs": yb.tolist(), "head": head,
                          "layout": "NHWC" if nhwc else "NCHW", "channels": c, "height": h, "width": w}
    # A Keras-style CNN as tf2onnx exports it (input [N,240,240,1] NHWC, Transposes into the
    # convolutions and back before the NHWC Flatten, Dense(2) + Sigmoid: 1.8 MB, 32x238x238
    # activations): the benchmark model of bench/user_models_ort.sh and docs/benchmarks.md.
    class KerasCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
            self.fc = nn.Linear(58 * 58 * 64, 2)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2)
            x = nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
            x = nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
            return torch.sigmoid(self.fc(x.permute(0, 2, 3, 1).flatten(1)))

    torch.onnx.export(KerasCnn().eval(), torch.zeros(1, 240, 240, 1), os.path.join(out, "keras_cnn240.onnx"),
                      opset_version=13, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print("user-model fixtures written to", out)


if __name__ == "__main__":
    main()
