// The validation report as a browser shows it: `medq validate` writes report.html for a tiny
// generated model pair, headless Chromium renders it, and the test checks that the page raised
// no console/JavaScript errors, that the DOM carries the verdict and the charts, and that the
// screenshot is a real page (decoded with medq's own PNG decoder): mostly white background but
// with a substantial inked area, many distinct colours, the verdict banner's colour at the top
// and the reference/candidate chart colours somewhere.
// Skips with a clear message where Chromium is not installed (Debian package `chromium`; a
// different binary can be named with MEDQ_CHROMIUM).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "../passes/onnx_test_builder.h"
#include "cli_test_util.h"
#include "data/image.h"

namespace medq {
namespace {

using namespace testing_onnx;
using nlohmann::json;

const std::string& kMedqBin = testing_cli::kMedq;
using testing_cli::exists;
using testing_cli::slurp;

std::string find_chromium() {
  if (const char* e = std::getenv("MEDQ_CHROMIUM")) return exists(e) ? e : "";
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (exists(p)) return p;
  return "";
}

int sh(const std::string& cmd) {
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct Rendered {
  int exit_code = -1;
  std::string dom;
  std::vector<std::string> console;  // console messages (errors, uncaught exceptions, failed loads)
  std::string log;
};

// One Chromium run: screenshot + serialized DOM + console log (--enable-logging=stderr reports
// every console message as "...:INFO:CONSOLE(line)] "text", source: ..."). The D-Bus variables
// stop Chromium waiting for buses that do not exist in a container.
Rendered render(const std::string& chromium, const std::string& html, const std::string& png, const std::string& dir) {
  Rendered r;
  std::string cmd = "cd '" + dir + "' && DBUS_SYSTEM_BUS_ADDRESS=disabled: DBUS_SESSION_BUS_ADDRESS=disabled: timeout 90 '" +
                    chromium + "' --headless --disable-gpu " + (::geteuid() == 0 ? "--no-sandbox " : "") +
                    "--no-first-run --disable-extensions --disable-dev-shm-usage --user-data-dir='" + dir +
                    "/chromium-profile' --enable-logging=stderr --v=0 --window-size=1280,2000 --screenshot='" + png +
                    "' --dump-dom 'file://" + html + "' > '" + dir + "/dom.html' 2> '" + dir + "/chromium.log'";
  r.exit_code = sh(cmd);
  r.dom = slurp(dir + "/dom.html");
  r.log = slurp(dir + "/chromium.log");
  std::istringstream in(r.log);
  for (std::string line; std::getline(in, line);)
    if (line.find(":CONSOLE") != std::string::npos || line.find("Uncaught") != std::string::npos)
      r.console.push_back(line);
  return r;
}

size_t count_of(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

class ReportRender : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = find_chromium();
    if (chromium_.empty())
      GTEST_SKIP() << "headless Chromium not found (apt-get install chromium, or set MEDQ_CHROMIUM): report "
                      "rendering not checked";
    if (!exists(kMedqBin)) GTEST_SKIP() << kMedqBin << " not built";
    char tmpl[] = "/tmp/medq_render_XXXXXX";
    char* d = ::mkdtemp(tmpl);
    ASSERT_NE(d, nullptr);
    dir_ = d;
  }
  void TearDown() override {
    if (!dir_.empty()) sh("rm -rf '" + dir_ + "'");
  }
  std::string file(const std::string& n) const { return dir_ + "/" + n; }

  void write_model(const std::string& name, uint32_t seed) {
    testing_cli::write_bytes(file(name),
                             testing_cli::tiny_image_classifier(3, R"(["benign", "malignant", "other"])", seed, -0.05f, 0.05f));
  }

  std::string chromium_, dir_;
};

TEST_F(ReportRender, HeadlessChromiumRendersTheReport) {
  write_model("ref.onnx", 1);
  write_model("cand.onnx", 2);
  std::string csv = "path,dx,sex,split\n";
  const char* imgs[] = {"gray1.png",     "gray2.png",     "gray4.png",     "gray8.png",      "rgb8.png",  "rgba8.png",
                        "la8.png",       "synth_420.jpg", "synth_422.jpg", "synth_444.jpg",  "rgb16.png", "gray16.png",
                        "palette4.png",  "la16.png",      "rgba16.png",    "synth_gray.jpg"};
  const char* dx[] = {"benign", "malignant", "other"};
  for (int i = 0; i < 16; ++i)
    csv += std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/" + imgs[i] + "," + dx[i % 3] + "," +
           (i % 2 ? "female" : "male") + ",test\n";
  std::ofstream(file("data.csv")) << csv;
  // An impossible floor: the report must come out REJECTED (red banner) with a failed rule.
  std::ofstream(file("gate.yaml")) << "min:\n  candidate.accuracy: 1.01\nmin_subgroup_size: 3\n";
  int rc = sh("cd '" + dir_ + "' && OMP_NUM_THREADS=1 '" + kMedqBin +
              "' validate --reference ref.onnx --candidate cand.onnx --data data.csv --label-column dx "
              "--positive malignant --groups sex --policy gate.yaml --quiet --batch 4 --report rep > validate.out 2>&1");
  ASSERT_EQ(rc, 1) << slurp(file("validate.out"));
  json rep = json::parse(slurp(file("rep/report.json")));
  ASSERT_EQ(rep["gate"]["verdict"], "REJECTED");

  Rendered r = render(chromium_, file("rep/report.html"), file("shot.png"), dir_);
  ASSERT_EQ(r.exit_code, 0) << "chromium failed:\n" << r.log;
  EXPECT_TRUE(r.console.empty()) << "console messages while rendering report.html:\n" << r.console.front();

  // DOM: the verdict banner, the failed rule, every chart and the model card.
  EXPECT_NE(r.dom.find("class=\"verdict bad\">REJECTED"), std::string::npos) << r.dom.substr(0, 2000);
  EXPECT_NE(r.dom.find("candidate.accuracy"), std::string::npos);
  EXPECT_NE(r.dom.find("Model card"), std::string::npos);
  // ROC: binary task + 3 classes; reliability; subgroup bars.
  EXPECT_GE(count_of(r.dom, "<svg"), 6u);
  EXPECT_GE(count_of(r.dom, "<polyline"), 8u);  // reference + candidate per ROC plot

  // Screenshot: decoded with medq's PNG decoder.
  auto img = decode_image_file(file("shot.png"));
  ASSERT_TRUE(img.is_ok()) << img.status().message();
  const Image& im = img.value();
  ASSERT_EQ(im.width, 1280);
  ASSERT_EQ(im.height, 2000);
  ASSERT_EQ(im.channels, 3);
  auto px = [&](int x, int y, int c) { return im.at((static_cast<size_t>(y) * im.width + x) * 3 + c); };
  auto near = [&](int x, int y, int r0, int g0, int b0) {
    return std::abs(px(x, y, 0) - r0) <= 4 && std::abs(px(x, y, 1) - g0) <= 4 && std::abs(px(x, y, 2) - b0) <= 4;
  };
  size_t inked = 0, banner = 0, ref_blue = 0, cand_orange = 0;
  std::set<int> colours;
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x) {
      int r0 = static_cast<int>(px(x, y, 0)), g0 = static_cast<int>(px(x, y, 1)), b0 = static_cast<int>(px(x, y, 2));
      if (r0 < 240 || g0 < 240 || b0 < 240) ++inked;
      colours.insert((r0 >> 3) << 10 | (g0 >> 3) << 5 | (b0 >> 3));
      if (y < 300 && near(x, y, 0xc6, 0x28, 0x28)) ++banner;  // .bad background #c62828
      if (near(x, y, 0x1f, 0x77, 0xb4)) ++ref_blue;            // reference series
      if (near(x, y, 0xff, 0x7f, 0x0e)) ++cand_orange;         // candidate series
    }
  const double frac = static_cast<double>(inked) / (static_cast<double>(im.width) * im.height);
  EXPECT_GT(frac, 0.03) << "screenshot looks blank: " << frac * 100 << "% non-white pixels";
  EXPECT_LT(frac, 0.9) << "screenshot is mostly ink: " << frac * 100 << "%";
  EXPECT_GE(colours.size(), 20u) << "too few distinct colours in the screenshot";
  EXPECT_GT(banner, 20000u) << "no red REJECTED banner at the top of the page";
  EXPECT_GT(ref_blue, 100u) << "no reference-coloured chart ink";
  EXPECT_GT(cand_orange, 100u) << "no candidate-coloured chart ink";
}

}  // namespace
}  // namespace medq
