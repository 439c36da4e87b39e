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

struct CmdResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out, err;
};

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
