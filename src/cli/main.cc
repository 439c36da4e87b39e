// medq command-line entry point: dispatches subcommands.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/cli.h"

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
               "  version                         print the version\n\n"
               "Run 'medq <command> --help' for the options of a command.\n",
               MEDQ_VERSION);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  try {
    if (cmd == "info") return medq::cli::cmd_info(argc, argv);
    if (cmd == "run") return medq::cli::cmd_run(argc, argv);
    if (cmd == "bench") return medq::cli::cmd_bench(argc, argv);
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
