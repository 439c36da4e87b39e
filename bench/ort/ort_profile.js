#!/usr/bin/env node
// ONNX Runtime's own per-node profile of one model (onnxruntime-node, CPU EP), for joining with
// `medq bench --profile --json` (bench/profile_join.py).
//
// usage: node bench/ort/ort_profile.js MODEL.onnx --batch N --threads T [--iters K] --out PREFIX
// Runs 3 warm-up + K runs with profiling on (same session options as ort_bench.js) and writes
// ORT's Chrome-trace JSON to PREFIX_<date>.json; prints that path. Profiling adds per-node
// overhead (tens of microseconds), so compare large nodes, not totals.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

// The newest file PREFIX_* (the node binding's endProfiling() does not return the name).
function newestWithPrefix(prefix) {
  const dir = path.dirname(path.resolve(prefix)), base = path.basename(prefix) + '_';
  const files = fs.readdirSync(dir).filter((f) => f.startsWith(base) && f.endsWith('.json'))
    .map((f) => path.join(dir, f)).sort((x, y) => fs.statSync(y).mtimeMs - fs.statSync(x).mtimeMs);
  return files[0];
}

async function main() {
  const argv = process.argv.slice(2);
  const a = { batch: 1, threads: 1, iters: 10, out: 'ort_profile' };
  let model = null;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--batch') a.batch = Number(argv[++i]);
    else if (k === '--threads') a.threads = Number(argv[++i]);
    else if (k === '--iters') a.iters = Number(argv[++i]);
    else if (k === '--out') a.out = argv[++i];
    else if (!k.startsWith('--') && !model) model = k;
    else { process.stderr.write(`error: unknown argument ${k}\n`); process.exit(2); }
  }
  if (!model || !(a.batch >= 1) || !(a.threads >= 1) || !(a.iters >= 1)) {
    process.stderr.write('usage: node ort_profile.js MODEL.onnx --batch N --threads T [--iters K] --out PREFIX\n');
    process.exit(2);
  }
  const s = await ort.InferenceSession.create(model, {
    intraOpNumThreads: a.threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
    executionMode: 'sequential', executionProviders: ['cpu'], enableProfiling: true, profileFilePrefix: a.out,
  });
  const meta = (s.inputMetadata || [])[0];
  const rest = meta && Array.isArray(meta.shape) && meta.shape.slice(1).every((d) => typeof d === 'number' && d > 0)
    ? meta.shape.slice(1) : [3, 224, 224];
  const shape = [a.batch].concat(rest);
  const n = shape.reduce((x, y) => x * y, 1);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i);
  const feeds = { [s.inputNames[0]]: new ort.Tensor('float32', x, shape) };
  for (let i = 0; i < a.iters + 3; i++) await s.run(feeds);
  s.endProfiling();
  const file = newestWithPrefix(a.out);
  if (!file) throw new Error('no profile written with prefix ' + a.out);
  process.stdout.write(file + '\n');
}
main().catch((e) => { process.stderr.write('error: ' + (e && e.stack ? e.stack : e) + '\n'); process.exit(1); });
