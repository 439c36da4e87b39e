#!/usr/bin/env node
// Run one float32 .npy input through ONNX Runtime and write the first output as .npy.
//
// usage: node bench/ort/ort_run.js MODEL.onnx INPUT.npy OUTPUT.npy [--threads T]
//
// The input .npy must be little-endian float32 ('<f4'), C order (npy format v1/v2/v3).
// It is fed to the model's first input.  The first output is written as .npy
// (float32 -> '<f4'; int64/int32/float64/uint8/bool outputs are written with their dtype).
// Session options match ort_bench.js (graphOptimizationLevel 'all', sequential).
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.length < 10 || buf[0] !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') {
    throw new Error(`${file}: not a .npy file`);
  }
  const major = buf[6];
  let hlen;
  let off;
  if (major === 1) { hlen = buf.readUInt16LE(8); off = 10; } else if (major === 2 || major === 3) {
    hlen = buf.readUInt32LE(8); off = 12;
  } else throw new Error(`${file}: unsupported npy version ${major}`);
  const header = buf.toString(major === 3 ? 'utf8' : 'latin1', off, off + hlen);
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header);
  const shapeM = /'shape'\s*:\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeM) throw new Error(`${file}: bad npy header: ${header}`);
  if (descr[1] !== '<f4') throw new Error(`${file}: dtype ${descr[1]}, expected <f4 (float32 LE)`);
  if (fortran[1] !== 'False') throw new Error(`${file}: fortran_order arrays are not supported`);
  const shape = shapeM[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  const count = shape.reduce((x, y) => x * y, 1);
  const dataOff = off + hlen;
  if (buf.length - dataOff < count * 4) throw new Error(`${file}: truncated data`);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = buf.readFloatLE(dataOff + 4 * i);
  return { shape, data };
}

const DTYPES = {
  float32: ['<f4', 4, (b, o, v) => b.writeFloatLE(v, o)],
  float64: ['<f8', 8, (b, o, v) => b.writeDoubleLE(v, o)],
  int32: ['<i4', 4, (b, o, v) => b.writeInt32LE(v, o)],
  int64: ['<i8', 8, (b, o, v) => b.writeBigInt64LE(BigInt(v), o)],
  uint8: ['|u1', 1, (b, o, v) => b.writeUInt8(v, o)],
  int8: ['|i1', 1, (b, o, v) => b.writeInt8(v, o)],
  bool: ['|b1', 1, (b, o, v) => b.writeUInt8(v ? 1 : 0, o)],
};

function writeNpy(file, type, shape, data) {
  const dt = DTYPES[type];
  if (!dt) throw new Error(`cannot write output of type ${type} as .npy`);
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${dt[0]}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  // magic(6) + version(2) + len(2) + header + '\n' padded to a multiple of 64.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header + ' '.repeat(total - 10 - header.length - 1) + '\n';
  const count = shape.reduce((x, y) => x * y, 1);
  const out = Buffer.alloc(total + count * dt[1]);
  out[0] = 0x93;
  out.write('NUMPY', 1, 'latin1');
  out[6] = 1;
  out[7] = 0;
  out.writeUInt16LE(header.length, 8);
  out.write(header, 10, 'latin1');
  for (let i = 0; i < count; i++) dt[2](out, total + i * dt[1], data[i]);
  fs.writeFileSync(file, out);
}

async function main() {
  const args = process.argv.slice(2);
  let threads = 1;
  const pos = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--threads' && i + 1 < args.length) threads = Number(args[++i]);
    else pos.push(args[i]);
  }
  if (pos.length !== 3) {
    process.stderr.write('usage: node ort_run.js MODEL.onnx INPUT.npy OUTPUT.npy [--threads T]\n');
    process.exit(2);
  }
  const [model, inFile, outFile] = pos;
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    executionProviders: ['cpu'],
  });
  const x = readNpy(inFile);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
  const outs = await session.run(feeds);
  const y = outs[session.outputNames[0]];
  writeNpy(outFile, y.type, y.dims.map(Number), y.data);
  process.stderr.write(`${session.outputNames[0]}: ${y.type} [${y.dims.join(', ')}] -> ${outFile}\n`);
}

main().catch((e) => {
  process.stderr.write('error: ' + (e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
