#!/usr/bin/env node
// ONNX Runtime (onnxruntime-node, CPU EP) peer benchmark for medq.
//
// usage: node bench/ort/ort_bench.js MODEL.onnx --batch N --threads T
//            [--iters K] [--warmup W] [--input-shape 3,224,224] [--seed S] [--json]
//
// Session: intraOpNumThreads=T, interOpNumThreads=1, graphOptimizationLevel 'all',
// executionMode 'sequential'.  Input: random float32 (seeded) of shape [N, ...], where
// "..." comes from the model's input metadata when those dims are static, else from
// --input-shape.  Runs W warmup + K timed iterations (wall clock around session.run).
// Output: JSON {model, batch, threads, median_ms, p95_ms, mean_ms, throughput_ips,
// peak_rss_mb, ...}.  With --json only one JSON line is printed (machine readable);
// otherwise a human-readable line precedes pretty-printed JSON.
'use strict';

const path = require('path');
const ort = require('onnxruntime-node');

function usage(msg) {
  if (msg) process.stderr.write('error: ' + msg + '\n');
  process.stderr.write(
    'usage: node ort_bench.js MODEL.onnx --batch N --threads T [--iters K] [--warmup W]\n' +
    '                         [--input-shape 3,224,224] [--seed S] [--json]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { batch: 1, threads: 1, iters: 20, warmup: 3, inputShape: null, seed: 1, json: false };
  let model = null;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage('missing value for ' + k);
      return argv[++i];
    };
    const posInt = (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) usage('bad integer for ' + k + ': ' + v);
      return n;
    };
    switch (k) {
      case '--batch': a.batch = posInt(next()); break;
      case '--threads': a.threads = posInt(next()); break;
      case '--iters': a.iters = posInt(next()); break;
      case '--warmup': a.warmup = posInt(next()); break;
      case '--seed': a.seed = posInt(next()); break;
      case '--input-shape':
        a.inputShape = next().split(/[,x]/).filter((s) => s.length).map(posInt);
        break;
      case '--json': a.json = true; break;
      case '-h': case '--help': usage(); break;
      default:
        if (k.startsWith('--')) usage('unknown option ' + k);
        if (model) usage('more than one model given');
        model = k;
    }
  }
  if (!model) usage('no model given');
  if (a.batch < 1 || a.iters < 1) usage('--batch and --iters must be >= 1');
  a.model = model;
  return a;
}

// Deterministic PRNG (mulberry32) + Box-Muller -> standard normal float32.
function randomNormal(n, seed) {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6D2B79F5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

function percentile(sorted, p) {
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[idx];
}

function resolveShape(meta, a) {
  const ms = meta && Array.isArray(meta.shape) ? meta.shape : null;
  const isStatic = (d) => typeof d === 'number' && d > 0;
  let rest = null;
  if (ms && ms.length >= 1 && ms.slice(1).every(isStatic)) rest = ms.slice(1);
  if (a.inputShape) {
    if (rest && rest.join(',') !== a.inputShape.join(',')) {
      process.stderr.write(`warning: --input-shape ${a.inputShape} overrides model shape ${rest}\n`);
    }
    rest = a.inputShape;
  }
  if (!rest) usage(`model input '${meta && meta.name}' has dynamic non-batch dims ` +
                   `(${JSON.stringify(ms)}); pass --input-shape`);
  if (ms && ms.length >= 1 && isStatic(ms[0]) && ms[0] !== a.batch) {
    usage(`model has a static batch dim ${ms[0]} but --batch ${a.batch} was given`);
  }
  return [a.batch].concat(rest);
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const opts = {
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    executionProviders: ['cpu'],
  };
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(a.model, opts);
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;

  const inName = session.inputNames[0];
  const meta = (session.inputMetadata || []).find((m) => m.name === inName) ||
               (session.inputMetadata || [])[0];
  if (meta && meta.type && meta.type !== 'float32') {
    usage(`input '${inName}' has type ${meta.type}; only float32 is supported`);
  }
  const shape = resolveShape(meta, a);
  const n = shape.reduce((x, y) => x * y, 1);
  const feeds = { [inName]: new ort.Tensor('float32', randomNormal(n, a.seed), shape) };

  for (let i = 0; i < a.warmup; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < a.iters; i++) {
    const s = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  const sorted = times.slice().sort((x, y) => x - y);
  const median = sorted.length % 2
    ? sorted[(sorted.length - 1) / 2]
    : 0.5 * (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]);
  const mean = times.reduce((x, y) => x + y, 0) / times.length;
  const r3 = (x) => Math.round(x * 1000) / 1000;
  const res = {
    model: a.model,
    batch: a.batch,
    threads: a.threads,
    median_ms: r3(median),
    p95_ms: r3(percentile(sorted, 0.95)),
    mean_ms: r3(mean),
    min_ms: r3(sorted[0]),
    throughput_ips: r3(a.batch * 1000 / median),
    peak_rss_mb: r3(process.resourceUsage().maxRSS / 1024),
    iters: a.iters,
    warmup: a.warmup,
    input_shape: shape,
    load_ms: r3(loadMs),
    engine: 'onnxruntime-node ' + ((ort.env && ort.env.versions && ort.env.versions.node) || '?'),
  };
  if (a.json) {
    process.stdout.write(JSON.stringify(res) + '\n');
  } else {
    process.stdout.write(`${path.basename(a.model)} batch=${a.batch} threads=${a.threads}: ` +
      `median ${res.median_ms} ms, p95 ${res.p95_ms} ms, ${res.throughput_ips} img/s, ` +
      `peak RSS ${res.peak_rss_mb} MB\n`);
    process.stdout.write(JSON.stringify(res, null, 1) + '\n');
  }
}

main().catch((e) => {
  process.stderr.write('error: ' + (e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
