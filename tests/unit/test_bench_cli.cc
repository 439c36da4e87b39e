// `medq bench --images`: every timed batch is decoded and preprocessed from real image files (held
// in memory) before it runs; the JSON reports the decode share; bad lists and bad images are
// one-line errors naming the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace medq {
namespace {

using namespace testing_cli;

class BenchCli : public CliWorkdir {
 protected:
  void SetUp() override {
    if (!make_workdir("benchcli")) GTEST_SKIP() << kMedq << " not built";
    write_bytes(file("tiny.onnx"), tiny_image_classifier(2, R"(["a", "b"])", 3));
  }
  static std::string src_image(const std::string& n) { return std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + n; }
};

TEST_F(BenchCli, ImagesAreDecodedForEveryBatch) {
  // Mixed formats, fewer images than rows per run: the feed wraps around.
  write_text(file("list.txt"), src_image("gray8.png") + "\n" + src_image("synth_420.jpg") + "\r\n\n" +
                                   src_image("rgba16.png") + "\n");
  CmdResult r = run("bench tiny.onnx --batch 4 --warmup 1 --iters 5 --images list.txt --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["batch"], 4);
  EXPECT_EQ(j["iterations"], 5);
  EXPECT_EQ(j["images"], "list.txt");
  EXPECT_GT(j["decode_median_ms"].get<double>(), 0.0);
  EXPECT_LE(j["decode_median_ms"].get<double>(), j["median_ms"].get<double>());
  CmdResult text = run("bench tiny.onnx --batch 2 --iters 2 --images list.txt");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("(decode + preprocessing + run)"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("images      3 from list.txt"), std::string::npos) << text.out;
}

TEST_F(BenchCli, BadImageListsAreErrorsNamingTheFile) {
  expect_input_error(run("bench tiny.onnx --images absent.txt"), {"absent.txt"});
  write_text(file("empty.txt"), "\n\n");
  expect_input_error(run("bench tiny.onnx --images empty.txt"), {"empty.txt", "no image paths"});
  write_text(file("missing.txt"), src_image("gray8.png") + "\nnot_there.png\n");
  expect_input_error(run("bench tiny.onnx --images missing.txt"), {"not_there.png"});
  write_text(file("junk.png"), "definitely not an image");
  write_text(file("junk.txt"), file("junk.png") + "\n");
  CmdResult r = run("bench tiny.onnx --iters 1 --images junk.txt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("junk.png"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace medq
