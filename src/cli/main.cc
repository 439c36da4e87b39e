// medq command-line entry point: dispatches subcommands.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cli/cli.h"
#include "core/alloc.h"

#ifndef MEDQ_VERSION
#define MEDQ_VERSION "dev"
#endif

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "medq %s: compress, validate and serve medical image classifiers (ONNX)\n\n"
               "usage: medq <command> [options]\n\n"
               "commands:\n"
               "  info MODEL                      inputs, outputs, opset, op histogram, parameters, metadata\n"
               "  run MODEL INPUT...              classify images/DICOM/.npy/.pb inputs (top-k, --json)\n"
               "  bench MODEL [--batch N] [--threads T]\n"
               "                                  latency (median, p95), throughput, peak memory\n"
               "  quantize MODEL --calib DATA -o OUT.onnx [--method minmax|percentile|entropy|mse]\n"
               "                                  int8 QDQ quantization (static, calibrated; or --mode dynamic)\n"
               "  convert --fp16 MODEL -o OUT.onnx\n"
               "                                  float16 model (float32 I/O, fragile ops kept float32)\n"
               "  eval MODEL --data DATA [--positive a,b] [--groups k1,k2] [--json OUT]\n"
               "                                  clinical metrics on a labelled dataset (AUROC CIs, calibration)\n"
               "  validate --reference FP32 --candidate INT8 --data DATA --report DIR [--policy gate.json]\n"
               "                                  paired comparison, subgroups, acceptance gate, HTML report\n"
               "  preprocess DATA --model M.onnx -o OUT.npy   dataset -> float32 .npy exactly as run/eval see it\n"
               "  annotate MODEL --labels a,b [--mean .. --std ..] -o OUT.onnx\n"
               "                                  record labels, preprocessing, output semantics in the model\n"
               "  serve --model-dir DIR [--port 8000] [--config serve.yaml]\n"
               "                                  HTTP inference server (batching, int8->fp32 fallback, API keys)\n"
               "  version                         print the version\n\n"
               "Run 'medq <command> --help' for the options of a command.\n",
               MEDQ_VERSION);
}

// oneDNN (Debian's build) runs on libgomp, whose idle workers spin ~300k iterations
// (GOMP_SPINCOUNT default) before sleeping. On a machine where anything else runs (a
// hospital server, a build, the HTTP server's own threads) the spinning workers burn
// the time slices the working ones need: a 2-thread mobilenet_v2 batch of 8 took 852 ms
// under load vs 228 ms with GOMP_SPINCOUNT=10000 (149 ms fully passive). On a quiet
// machine 10000 spins keep active waiting's latency (mobilenet_v2 batch 1, 2 threads:
// 3.01 ms vs 3.08 active, 4.30 passive). libgomp reads these variables once when it is
// loaded, before main(), so medq re-executes itself once with GOMP_SPINCOUNT=10000 unless
// the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT set: respected as is).
void ensure_bounded_omp_spin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  setenv("GOMP_SPINCOUNT", "10000", 1);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): carry on with the default policy.
}

}  // namespace

int main(int argc, char** argv) {
  ensure_bounded_omp_spin(argv);
  medq::tune_allocator();
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  try {
    if (cmd == "info") return medq::cli::cmd_info(argc, argv);
    if (cmd == "run") return medq::cli::cmd_run(argc, argv);
    if (cmd == "bench") return medq::cli::cmd_bench(argc, argv);
    if (cmd == "eval") return medq::cli::cmd_eval(argc, argv);
    if (cmd == "validate") return medq::cli::cmd_validate(argc, argv);
    if (cmd == "quantize") return medq::cli::cmd_quantize(argc, argv);
    if (cmd == "convert") return medq::cli::cmd_convert(argc, argv);
    if (cmd == "serve") return medq::cli::cmd_serve(argc, argv);
    if (cmd == "preprocess") return medq::cli::cmd_preprocess(argc, argv);
    if (cmd == "annotate") return medq::cli::cmd_annotate(argc, argv);
    if (cmd == "version" || cmd == "--version") {
      std::printf("medq %s\n", MEDQ_VERSION);
      return 0;
    }
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
      usage(stdout);
      return 0;
    }
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "medq: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "medq: error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "medq: error: unknown command '%s'\n\n", cmd.c_str());
  usage(stderr);
  return 2;
}
