// CLI error handling: runs the built medq binary on broken inputs and checks
// for a non-zero exit code, a one-line "medq: error: ..." on stderr that names
// the offending file, and that no output file is left behind.
#include <gtest/gtest.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "../passes/onnx_test_builder.h"
#include "core/npy.h"
#include "cli_test_util.h"

namespace medq {
namespace {

using namespace testing_onnx;
using namespace testing_cli;


class CliErrors : public testing_cli::CliWorkdir {
 protected:
  void SetUp() override {
    if (!make_workdir("cli")) GTEST_SKIP() << kMedq << " not built";
  }


  // Non-zero exit (not a signal), exactly one stderr line "medq: error: ..." containing every needle.
  void expect_one_line_error(const CmdResult& r, const std::vector<std::string>& needles) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_LT(r.exit_code, 128) << "killed by a signal; stderr: " << r.err;
    EXPECT_EQ(r.err.rfind("medq: error: ", 0), 0u) << r.err;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
    for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "'" << n << "' not in: " << r.err;
  }

  // Files in the temp dir (ignoring the given inputs).
  std::vector<std::string> listing() const {
    std::vector<std::string> r;
    DIR* d = opendir(dir_.c_str());
    while (dirent* e = d ? readdir(d) : nullptr) {
      std::string n = e->d_name;
      if (n != "." && n != "..") r.push_back(n);
    }
    if (d) closedir(d);
    std::sort(r.begin(), r.end());
    return r;
  }

  // A tiny image classifier: X[batch,3,8,8] -> Conv 8x8 -> Flatten -> [batch,2].
  std::string write_tiny_model(const std::string& name) {
    std::string bytes = tiny_image_classifier(2, R"(["benign", "malignant"])", 1);
    write_bytes(file(name), bytes);
    return bytes;
  }

  std::string image(const std::string& n) const { return std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + n; }

};

TEST_F(CliErrors, SanityTinyModelRuns) {
  write_tiny_model("tiny.onnx");
  auto r = run("run tiny.onnx '" + image("rgb8.png") + "' '" + image("synth_420.jpg") + "' --save-output out.npy");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(exists(file("out.npy")));
  EXPECT_NE(r.out.find("malignant"), std::string::npos) << r.out;
}

TEST_F(CliErrors, MissingModelFile) {
  for (const char* cmd : {"info", "run", "bench"}) {
    std::string args = std::string(cmd) + " no_such_model.onnx";
    if (std::string(cmd) == "run") args += " '" + image("rgb8.png") + "'";
    auto r = run(args);
    SCOPED_TRACE(cmd);
    expect_one_line_error(r, {"no_such_model.onnx"});
  }
}

TEST_F(CliErrors, TruncatedModel) {
  std::string bytes = write_tiny_model("tiny.onnx");
  write_bytes(file("trunc.onnx"), bytes.substr(0, bytes.size() / 2));
  for (const char* cmd : {"info", "run", "bench"}) {
    std::string args = std::string(cmd) + " trunc.onnx";
    if (std::string(cmd) == "run") args += " '" + image("rgb8.png") + "' --save-output out.npy";
    auto r = run(args);
    SCOPED_TRACE(cmd);
    expect_one_line_error(r, {"trunc.onnx"});
    EXPECT_FALSE(exists(file("out.npy")));
  }
}

TEST_F(CliErrors, GarbageModel) {
  write_bytes(file("garbage.onnx"), std::string("\x08\x07\x12\x05hello\xff\xff\xff\xff\x0f garbage"));
  auto r = run("info garbage.onnx");
  expect_one_line_error(r, {"garbage.onnx"});
}

TEST_F(CliErrors, CorruptJpegLeavesNoOutput) {
  write_tiny_model("tiny.onnx");
  std::string jpg = slurp(image("synth_420.jpg"));
  ASSERT_GT(jpg.size(), 200u);
  write_bytes(file("truncated.jpg"), jpg.substr(0, jpg.size() / 2));
  std::string garbled = jpg;
  for (size_t i = 20; i < garbled.size(); i += 7) garbled[i] = static_cast<char>(garbled[i] ^ 0x5a);
  write_bytes(file("garbled.jpg"), garbled);
  write_bytes(file("notanimage.jpg"), "this is not a JPEG file\n");
  for (const char* bad : {"truncated.jpg", "garbled.jpg", "notanimage.jpg"}) {
    SCOPED_TRACE(bad);
    // The bad file comes second, in a later batch: nothing may be written.
    auto r = run("run tiny.onnx '" + image("rgb8.png") + "' " + bad + " --batch 1 --save-output out.npy");
    expect_one_line_error(r, {bad});
    EXPECT_FALSE(exists(file("out.npy")));
  }
}

TEST_F(CliErrors, TruncatedDicom) {
  std::string dcm = std::string(MEDQ_SHARED_DATA) + "/dicom/MR_truncated.dcm";
  if (!exists(dcm)) GTEST_SKIP() << dcm << " not found";
  write_tiny_model("tiny.onnx");
  auto r = run("run tiny.onnx '" + dcm + "' --save-output out.npy");
  expect_one_line_error(r, {"MR_truncated.dcm"});
  EXPECT_FALSE(exists(file("out.npy")));
}

TEST_F(CliErrors, UndecodableJpeg2000DicomIsBadInput) {
  std::string dcm = std::string(MEDQ_SHARED_DATA) + "/dicom/JPEG2000.dcm";
  if (!exists(dcm)) GTEST_SKIP() << dcm << " not found";
  write_tiny_model("tiny.onnx");
  auto r = run("run tiny.onnx '" + dcm + "' --save-output out.npy");
  expect_one_line_error(r, {"JPEG2000.dcm", "JPEG 2000"});
  EXPECT_EQ(r.exit_code, 2);  // documented: 2 = bad input (was 1)
  EXPECT_FALSE(exists(file("out.npy")));
}

TEST_F(CliErrors, NonImageInputRunsTensorsAndRefusesImages) {
  // A 4-channel input: tensors run; an image gets one line naming the channels (was: every
  // command refused the model while resolving its preprocessing).
  OnnxBuilder b(13);
  b.input("x", {-1, 4, 6, 6}, kF32, "N");
  b.init("W", random_f32({2, 4, 6, 6}, 3));
  b.node("Conv", {"x", "W"}, {"c"}, "conv");
  b.node("Flatten", {"c"}, {"y"}, "flatten");
  b.output("y");
  write_bytes(file("four.onnx"), b.bytes());
  ASSERT_TRUE(save_npy(random_f32({3, 4, 6, 6}, 4), file("x.npy")).is_ok());
  auto r = run("run four.onnx x.npy --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  std::string png = std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/rgb8.png";
  r = run("run four.onnx '" + png + "'");
  expect_one_line_error(r, {"4 channels", "tensors (.npy, .pb) can still be run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(run("run four.onnx '" + png + "' --color RGB").exit_code, 2);  // 3 channels vs 4: named
}

TEST_F(CliErrors, ModelWithoutNodesOrOutputs) {
  // Was SIGSEGV in medq run.
  OnnxBuilder b(13);
  b.input("x", {1, 4});
  write_bytes(file("empty.onnx"), b.raw_bytes());
  ASSERT_TRUE(save_npy(random_f32({1, 4}, 5), file("x.npy")).is_ok());
  for (const char* cmd : {"run empty.onnx x.npy", "info empty.onnx", "bench empty.onnx --iters 1"}) {
    auto r = run(cmd);
    expect_one_line_error(r, {"empty.onnx", "no outputs"});
    EXPECT_EQ(r.exit_code, 2) << cmd;
  }
}

TEST_F(CliErrors, DevicesFifosAndDirectoriesAreRefusedAtOnce) {
  // `medq info /dev/zero` read forever; a FIFO blocked in open().
  ASSERT_EQ(::mkfifo(file("fifo.onnx").c_str(), 0600), 0);
  write_tiny_model("tiny.onnx");
  for (const char* cmd : {"info /dev/zero", "info fifo.onnx", "info .", "run tiny.onnx /dev/zero",
                          "run tiny.onnx fifo.onnx", "eval tiny.onnx --data fifo.onnx"}) {
    auto r = run(cmd);
    const std::string c = cmd;
    expect_one_line_error(r, {c.find("/dev/zero") != std::string::npos ? "/dev/zero" : c.find("fifo") != std::string::npos ? "fifo.onnx" : "'.'"});
    EXPECT_EQ(r.exit_code, 2) << cmd;
  }
}

TEST_F(CliErrors, MissingInputFile) {
  write_tiny_model("tiny.onnx");
  auto r = run("run tiny.onnx missing_image.png --save-output out.npy");
  expect_one_line_error(r, {"missing_image.png"});
  EXPECT_FALSE(exists(file("out.npy")));
}

TEST_F(CliErrors, BadBatchValues) {
  write_tiny_model("tiny.onnx");
  for (const char* v : {"0", "-3", "abc", "1.5", "99999999999999999999"}) {
    SCOPED_TRACE(v);
    auto r = run(std::string("run tiny.onnx '") + image("rgb8.png") + "' --batch " + v);
    expect_one_line_error(r, {"--batch"});
    if (std::string(v) == "0" || std::string(v) == "abc") {
      auto r2 = run(std::string("bench tiny.onnx --iters 1 --batch ") + v);
      expect_one_line_error(r2, {"--batch"});
    }
  }
  auto r3 = run(std::string("run tiny.onnx '") + image("rgb8.png") + "' --batch");
  expect_one_line_error(r3, {"--batch"});
}

TEST_F(CliErrors, UnknownCommandAndFlag) {
  auto r = run("frobnicate model.onnx");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err.rfind("medq: error: unknown command 'frobnicate'", 0), 0u) << r.err;  // usage follows
  write_tiny_model("tiny.onnx");
  auto r2 = run("info tiny.onnx --no-such-flag");
  expect_one_line_error(r2, {"--no-such-flag"});
}

TEST_F(CliErrors, SaveOutputFailureLeavesNoFile) {
  write_tiny_model("tiny.onnx");
  ::mkdir(file("outdir").c_str(), 0755);  // rename onto a directory fails
  write_bytes(file("plainfile"), "x");    // a file used as a folder: the temp file cannot be created
  auto before = listing();
  for (const char* out : {"outdir", "plainfile/out.npy", "no/such/dir/out.npy"}) {
    SCOPED_TRACE(out);
    auto r = run("run tiny.onnx '" + image("rgb8.png") + "' --save-output " + out);
    expect_one_line_error(r, {out});
    auto after = listing();
    EXPECT_EQ(after, before) << "a (temporary) output file was left behind";
    for (const auto& f : after)
      if (std::find(before.begin(), before.end(), f) == before.end()) ::unlink(file(f).c_str());
  }
}

}  // namespace
}  // namespace medq
