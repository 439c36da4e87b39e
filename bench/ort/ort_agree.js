#!/usr/bin/env node
// Runs a classifier in ONNX Runtime (onnxruntime-node, CPU EP) on a float32 .npy batch (e.g. the
// output of `medq preprocess`, so ORT sees exactly medq's inputs), writes per-row predictions and
// logits as CSV, and optionally compares them with labels and with medq's logits for the same rows.
//
// usage: node bench/ort/ort_agree.js MODEL.onnx INPUT.npy [--out ORT.csv] [--labels L.csv]
//            [--medq MEDQ.npy] [--batch N] [--threads T] [--json]
//
//   INPUT.npy   float32 '<f4' C-order [N, ...] (rows = samples)
//   --out       CSV: index,pred,logit_0,...,logit_{k-1} (written to a temp file, then renamed)
//   --labels    the CSV of `medq preprocess --labels-out` (index,id,path,label,label_index):
//               ORT top-1 accuracy over rows whose label_index is set
//   --medq      medq's output 0 for the same rows ([N, k] float32 .npy, e.g. `medq run MODEL
//               <the same images> --save-output MEDQ.npy`): top-1 agreement ORT vs medq, logit diffs
//   --batch     rows per session.run (default 16; a static batch dim in the model overrides it)
//   --threads   intraOpNumThreads (default 1)
// Summary: one JSON line on stdout {model, n, classes, ort_accuracy, agreement, disagreements,
// max_abs_logit_diff, mean_abs_logit_diff, ...}; with --json nothing else is printed on stdout.
'use strict';

const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function die(msg, code = 2) {
  process.stderr.write('ort_agree: error: ' + msg + '\n');
  process.exit(code);
}

function parseArgs(argv) {
  const a = { out: null, labels: null, medq: null, batch: 16, threads: 1, json: false };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) die('missing value for ' + k);
      return argv[++i];
    };
    const posInt = (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) die(`${k}: expected a positive integer, got '${v}'`);
      return n;
    };
    switch (k) {
      case '--out': a.out = next(); break;
      case '--labels': a.labels = next(); break;
      case '--medq': a.medq = next(); break;
      case '--batch': a.batch = posInt(next()); break;
      case '--threads': a.threads = posInt(next()); break;
      case '--json': a.json = true; break;
      case '-h': case '--help':
        process.stdout.write('usage: node ort_agree.js MODEL.onnx INPUT.npy [--out ORT.csv] [--labels L.csv] ' +
                             '[--medq MEDQ.npy] [--batch N] [--threads T] [--json]\n');
        process.exit(0);
        break;
      default:
        if (k.startsWith('--')) die('unknown option ' + k);
        pos.push(k);
    }
  }
  if (pos.length !== 2) die('expected MODEL.onnx INPUT.npy (got ' + pos.length + ' positional arguments)');
  [a.model, a.input] = pos;
  return a;
}

// .npy (v1/v2/v3, little-endian float32, C order) -> {shape, data: Float32Array}.
function readNpyF32(file) {
  let buf;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    die(`cannot read '${file}': ${e.code || e.message}`);
  }
  if (buf.length < 10 || buf[0] !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') die(`${file}: not a .npy file`);
  const major = buf[6];
  let hlen;
  let off;
  if (major === 1) { hlen = buf.readUInt16LE(8); off = 10; } else if (major === 2 || major === 3) {
    hlen = buf.readUInt32LE(8); off = 12;
  } else die(`${file}: unsupported npy version ${major}`);
  const header = buf.toString('latin1', off, off + hlen);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeM = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeM) die(`${file}: bad npy header: ${header.trim()}`);
  if (descr[1] !== '<f4') die(`${file}: dtype ${descr[1]}, expected <f4 (float32 little-endian)`);
  if (fortran[1] !== 'False') die(`${file}: fortran_order arrays are not supported`);
  const shape = shapeM[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  const count = shape.reduce((x, y) => x * y, 1);
  const dataOff = off + hlen;
  if (buf.length - dataOff !== count * 4) {
    die(`${file}: ${buf.length - dataOff} data bytes for shape (${shape}), expected ${count * 4}`);
  }
  // Copy into an aligned buffer (the data offset is a multiple of 64 but the Node Buffer's own
  // offset in its pool need not be 4-aligned).
  const data = new Float32Array(count);
  new Uint8Array(data.buffer).set(buf.subarray(dataOff, dataOff + count * 4));
  return { shape, data };
}

// Minimal RFC 4180 CSV reader (quoted fields, "" escapes) -> array of objects keyed by header.
function readCsv(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    die(`cannot read '${file}': ${e.code || e.message}`);
  }
  const rows = [];
  let row = [];
  let field = '';
  let q = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (q) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') q = false;
      else field += c;
    } else if (c === '"') q = true;
    else if (c === ',') { row.push(field); field = ''; } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field); field = '';
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
    } else field += c;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  if (!rows.length) die(`${file}: empty CSV`);
  const head = rows[0];
  return rows.slice(1).map((r) => Object.fromEntries(head.map((h, j) => [h, r[j]])));
}

function argmax(x, off, k) {
  let best = 0;
  for (let c = 1; c < k; c++) if (x[off + c] > x[off + best]) best = c;
  return best;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const x = readNpyF32(a.input);
  if (x.shape.length < 2) die(`${a.input}: expected a batch [N, ...], got shape (${x.shape})`);
  const n = x.shape[0];
  const rowShape = x.shape.slice(1);
  const rowSize = rowShape.reduce((p, q) => p * q, 1);

  let session;
  try {
    session = await ort.InferenceSession.create(a.model, {
      intraOpNumThreads: a.threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      executionProviders: ['cpu'],
    });
  } catch (e) {
    die(`${a.model}: ONNX Runtime cannot load it: ${e.message}`, 1);
  }
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];
  const meta = (session.inputMetadata || []).find((m) => m.name === inName);
  let batch = a.batch;
  if (meta && Array.isArray(meta.shape) && typeof meta.shape[0] === 'number' && meta.shape[0] > 0) batch = meta.shape[0];

  const t0 = process.hrtime.bigint();
  let k = -1;
  let logits = null;
  for (let s = 0; s < n; s += batch) {
    const b = Math.min(batch, n - s);
    if (b !== batch && batch !== a.batch) die(`model has a static batch of ${batch}; ${n} rows is not a multiple`);
    const feed = new ort.Tensor('float32', x.data.subarray(s * rowSize, (s + b) * rowSize), [b].concat(rowShape));
    let outs;
    try {
      outs = await session.run({ [inName]: feed });
    } catch (e) {
      die(`${a.model}: ORT run failed on rows ${s}..${s + b - 1}: ${e.message}`, 1);
    }
    const y = outs[outName];
    if (y.type !== 'float32') die(`output '${outName}' is ${y.type}, expected float32 logits`, 1);
    const kk = y.data.length / b;
    if (k < 0) { k = kk; logits = new Float32Array(n * k); } else if (kk !== k) die('output size changed between batches', 1);
    logits.set(y.data, s * k);
    if (!a.json && process.stderr.isTTY) process.stderr.write(`\rort: ${s + b}/${n}`);
  }
  const runS = Number(process.hrtime.bigint() - t0) / 1e9;
  if (!a.json && process.stderr.isTTY) process.stderr.write('\n');
  const pred = new Int32Array(n);
  for (let i = 0; i < n; i++) pred[i] = argmax(logits, i * k, k);

  const res = {
    model: a.model, input: a.input, n, classes: k, ort_seconds: Math.round(runS * 1000) / 1000,
    engine: 'onnxruntime-node ' + ((ort.env && ort.env.versions && ort.env.versions.common) || ''),
  };
  if (a.labels) {
    const rows = readCsv(a.labels);
    if (rows.length !== n) die(`${a.labels}: ${rows.length} rows but ${a.input} has ${n}`);
    let correct = 0;
    let counted = 0;
    rows.forEach((r, i) => {
      if (r.label_index === undefined) die(`${a.labels}: no 'label_index' column (use medq preprocess --labels-out)`);
      if (r.label_index === '') return;
      counted++;
      if (Number(r.label_index) === pred[i]) correct++;
    });
    res.labelled = counted;
    res.ort_accuracy = counted ? correct / counted : null;
  }
  if (a.medq) {
    const m = readNpyF32(a.medq);
    if (m.shape[0] !== n || m.data.length !== n * k) {
      die(`${a.medq}: shape (${m.shape}) does not match ORT's output [${n}, ${k}]`);
    }
    let agree = 0;
    let maxd = 0;
    let sumd = 0;
    const dis = [];
    for (let i = 0; i < n; i++) {
      const pm = argmax(m.data, i * k, k);
      if (pm === pred[i]) agree++;
      else dis.push(i);
      for (let c = 0; c < k; c++) {
        const d = Math.abs(m.data[i * k + c] - logits[i * k + c]);
        maxd = Math.max(maxd, d);
        sumd += d;
      }
    }
    res.agreement = agree / n;
    res.disagreements = n - agree;
    res.disagreeing_rows = dis.slice(0, 20);
    res.max_abs_logit_diff = maxd;
    res.mean_abs_logit_diff = sumd / (n * k);
  }
  if (a.out) {
    const lines = ['index,pred,' + Array.from({ length: k }, (_, c) => 'logit_' + c).join(',')];
    for (let i = 0; i < n; i++) lines.push(`${i},${pred[i]},` + Array.from(logits.subarray(i * k, (i + 1) * k)).join(','));
    const tmp = `${a.out}.tmp.${process.pid}`;
    try {
      fs.writeFileSync(tmp, lines.join('\n') + '\n');
      fs.renameSync(tmp, a.out);
    } catch (e) {
      try { fs.unlinkSync(tmp); } catch (_) { /* not created */ }
      die(`cannot write '${a.out}': ${e.code || e.message}`, 1);
    }
  }
  if (!a.json) {
    let line = `${path.basename(a.model)}: ${n} rows, ${k} classes, ORT ${res.ort_seconds}s`;
    if (res.ort_accuracy !== undefined && res.ort_accuracy !== null) line += `, ORT accuracy ${res.ort_accuracy.toFixed(4)}`;
    if (res.agreement !== undefined) {
      line += `, ORT vs medq top-1 agreement ${(100 * res.agreement).toFixed(2)}% (${res.disagreements} differ), ` +
              `max |logit diff| ${res.max_abs_logit_diff.toPrecision(3)}`;
    }
    process.stderr.write(line + '\n');
  }
  process.stdout.write(JSON.stringify(res) + '\n');
}

main().catch((e) => die(e && e.stack ? e.stack : String(e), 1));
