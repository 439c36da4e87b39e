#!/usr/bin/python3
"""Generates the reference values of tests/unit/test_metrics.cc with scikit-learn / scipy.

Run from the project root with Debian's interpreter (python3-sklearn, python3-scipy):

    /usr/bin/python3 tests/unit/gen_metrics_ref.py

and commit the JSON files it writes to tests/data/metrics/ (the C++ tests read only those,
so they need no Python). Contents:

  binary_ties.json     several generated binary score vectors with many ties (scores rounded
                       to 1-2 decimals) + labels; sklearn roc_auc_score, average_precision_score,
                       roc_curve (drop_intermediate=False).
  multiclass.json      a generated 5-class probability matrix (rounded: ties) + labels;
                       confusion_matrix, accuracy, balanced_accuracy, per-class/macro precision,
                       recall, f1, one-vs-rest roc_auc / average precision, a binary task
                       (positives {0, 3}, score = summed probability) and the 15-bin ECE computed
                       directly with numpy (bins (b/15, (b+1)/15], confidence = max probability).
  mcnemar.json         exact McNemar p-values (scipy.stats.binomtest, two-sided, p = 0.5) for
                       discordant pair counts (b, c).
  real_logits.json     metrics on the shared data's PyTorch test logits
                       (../shared/data/models/*_test_logits.csv); only the metric values are
                       stored, the test reads the logits from the shared folder (skips if absent).
"""
import csv
import json
import os

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score,
                             confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score,
                             roc_curve)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "metrics")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def ece_direct(probs, y, bins=15):
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == y).astype(float)
    ece = 0.0
    n = len(y)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        mask = (conf > lo) & (conf <= hi)
        if b == 0:
            mask |= conf == 0
        if mask.sum() == 0:
            continue
        ece += mask.sum() / n * abs(correct[mask].mean() - conf[mask].mean())
    return ece


def multiclass_ref(probs, y, k, positives):
    labels = list(range(k))
    pred = probs.argmax(axis=1)
    r = {
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "precision": precision_score(y, pred, labels=labels, average=None, zero_division=0).tolist(),
        "recall": recall_score(y, pred, labels=labels, average=None, zero_division=0).tolist(),
        "f1": f1_score(y, pred, labels=labels, average=None, zero_division=0).tolist(),
        "macro_precision": precision_score(y, pred, labels=labels, average="macro", zero_division=0),
        "macro_recall": recall_score(y, pred, labels=labels, average="macro", zero_division=0),
        "macro_f1": f1_score(y, pred, labels=labels, average="macro", zero_division=0),
        "auroc": [roc_auc_score(y == c, probs[:, c]) for c in labels],
        "pr_auc": [average_precision_score(y == c, probs[:, c]) for c in labels],
        "macro_auroc_ovr": roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels)
        if np.allclose(probs.sum(axis=1), 1) else None,
        "ece15": ece_direct(probs, y),
    }
    yb = np.isin(y, positives)
    s = probs[:, positives].sum(axis=1)
    pb = s >= 0.5
    r["binary"] = {
        "positives": positives,
        "auroc": roc_auc_score(yb, s),
        "pr_auc": average_precision_score(yb, s),
        "sensitivity": recall_score(yb, pb),
        "specificity": recall_score(~yb, ~pb),
        "precision": precision_score(yb, pb, zero_division=0),
        "f1": f1_score(yb, pb, zero_division=0),
    }
    return r


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240601)

    # Binary scores with ties.
    cases = []
    for i, (n, dec, prev) in enumerate([(40, 1, 0.5), (200, 1, 0.3), (333, 2, 0.1), (1000, 2, 0.45), (25, 0, 0.4)]):
        y = (rng.random(n) < prev).astype(int)
        if y.sum() == 0:
            y[0] = 1
        if y.sum() == n:
            y[0] = 0
        s = np.round(rng.normal(0, 1, n) * 0.25 + y * 0.3 + 0.5, dec)
        fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
        cases.append({
            "scores": s.tolist(), "labels": y.tolist(),
            "auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s),
            "roc_fpr": fpr.tolist(), "roc_tpr": tpr.tolist(),
        })
    with open(os.path.join(OUT, "binary_ties.json"), "w") as f:
        json.dump({"cases": cases}, f)

    # Multiclass probabilities (5 classes, imbalanced, rounded -> ties).
    k, n = 5, 400
    y = rng.choice(k, size=n, p=[0.4, 0.25, 0.15, 0.12, 0.08])
    logits = rng.normal(0, 1, (n, k)) * 1.2
    logits[np.arange(n), y] += 1.3
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p = np.round(p, 2)
    p[:, -1] = np.round(1 - p[:, :-1].sum(axis=1), 2)  # rows still sum to ~1; may be slightly off
    p = np.clip(p, 0, 1)
    mc = multiclass_ref(p, y, k, [0, 3])
    mc["probs"] = p.tolist()
    mc["labels"] = y.tolist()
    with open(os.path.join(OUT, "multiclass.json"), "w") as f:
        json.dump(mc, f)

    # McNemar exact.
    mn = []
    for b, c in [(0, 0), (1, 0), (3, 1), (5, 5), (10, 2), (0, 7), (17, 30), (60, 40), (123, 150), (3, 20)]:
        p_exact = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
        mn.append({"b": b, "c": c, "p": p_exact})
    with open(os.path.join(OUT, "mcnemar.json"), "w") as f:
        json.dump({"cases": mn}, f)

    # Metrics of the shared PyTorch logits (data stays in the shared folder).
    real = {}
    for name, pos in [("brain_resnet18", []), ("skin_mobilenet_v2", ["mel", "bcc", "akiec"])]:
        path = os.path.join(SHARED, "models", name + "_test_logits.csv")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            rows = list(csv.reader(f))
        names = [h[len("logit_"):] for h in rows[0][2:]]
        lg = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
        yy = np.array([names.index(r[1]) for r in rows[1:]])
        pr = np.exp(lg - lg.max(axis=1, keepdims=True))
        pr /= pr.sum(axis=1, keepdims=True)
        r = multiclass_ref(pr, yy, len(names), [names.index(x) for x in pos] if pos else [0])
        if not pos:
            del r["binary"]
        r["class_names"] = names
        r["n"] = len(yy)
        real[name] = r
    with open(os.path.join(OUT, "real_logits.json"), "w") as f:
        json.dump(real, f, indent=1)


if __name__ == "__main__":
    main()
