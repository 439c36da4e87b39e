// Shared by the CLI tests: runs the built `medq` binary in a scratch folder and
// captures its exit code, stdout and stderr.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../passes/onnx_test_builder.h"

namespace medq::testing_cli {

inline const std::string kMedq = std::string(MEDQ_BINARY_DIR) + "/medq";

inline bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

inline std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct CmdResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out, err;
};

inline void write_text(const std::string& path, const std::string& s) { write_bytes(path, s); }

// 8x8 RGB preprocessing of the CLI tests' image classifiers.
inline const char* const kTinyPreprocess =
    R"({"color": "RGB", "resize": [8, 8], "interpolation": "bilinear", "scale": 0.00392156862745098,)"
    R"( "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "layout": "NCHW"})";

// The model metadata of the CLI tests' image classifiers: preprocessing and labels.
inline void add_image_metadata(testing_onnx::OnnxBuilder& b, const std::string& labels_json,
                               const std::string& preprocess_json = kTinyPreprocess) {
  auto* p = b.proto().add_metadata_props();
  p->set_key("preprocess");
  p->set_value(preprocess_json);
  auto* l = b.proto().add_metadata_props();
  l->set_key("labels");
  l->set_value(labels_json);
}

// A tiny image classifier: image[batch,3,8,8] -> Conv 8x8 (`classes` filters, weights uniform in
// [lo, hi] from `seed`) -> Flatten -> logits[batch, classes], with add_image_metadata. Model bytes.
inline std::string tiny_image_classifier(int classes, const std::string& labels_json, uint32_t seed,
                                         float lo = -1.f, float hi = 1.f,
                                         const std::string& preprocess_json = kTinyPreprocess) {
  using namespace testing_onnx;
  OnnxBuilder b(13);
  b.input("image", {-1, 3, 8, 8}, kF32, "batch");
  b.init("W", random_f32({classes, 3, 8, 8}, seed, lo, hi));
  b.node("Conv", {"image", "W"}, {"c"}, "conv");
  b.node("Flatten", {"c"}, {"logits"}, "flatten");
  b.output("logits");
  add_image_metadata(b, labels_json, preprocess_json);
  return b.bytes();
}

// A test fixture with a fresh scratch folder (removed afterwards) in which `run`
// executes `medq ARGS` single-threaded.
class CliWorkdir : public ::testing::Test {
 protected:
  // Call from SetUp(): skips when medq is not built, else makes the folder.
  bool make_workdir(const std::string& tag) {
    if (!exists(kMedq)) return false;
    std::string tmpl = "/tmp/medq_" + tag + "_XXXXXX";
    char* d = ::mkdtemp(tmpl.data());
    if (!d) {
      ADD_FAILURE() << "mkdtemp " << tmpl << " failed";
      return false;
    }
    dir_ = d;
    return true;
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  std::string file(const std::string& n) const { return dir_ + "/" + n; }

  // Exit code 2 (bad input) with a "medq: error: " message containing every needle.
  static void expect_input_error(const CmdResult& r, const std::vector<std::string>& needles) {
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err.rfind("medq: error: ", 0), 0u) << r.err;
    for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "'" << n << "' not in: " << r.err;
  }

  CmdResult run(const std::string& args) {
    CmdResult r;
    std::string cmd = "cd '" + dir_ + "' && OMP_NUM_THREADS=1 '" + kMedq + "' " + args + " > '" + dir_ +
                      "/.stdout' 2> '" + dir_ + "/.stderr'";
    int st = std::system(cmd.c_str());
    r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = slurp(dir_ + "/.stdout");
    r.err = slurp(dir_ + "/.stderr");
    ::unlink((dir_ + "/.stdout").c_str());
    ::unlink((dir_ + "/.stderr").c_str());
    return r;
  }

  std::string dir_;
};

}  // namespace medq::testing_cli
