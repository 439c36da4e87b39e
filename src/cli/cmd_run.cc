// `medq run MODEL INPUT...`: preprocesses each input (image, DICOM, .npy,
// .pb), runs the model in batches and prints the top-k labels with softmax
// probabilities (or raw outputs with --raw), as text or --json.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cli/cli.h"
#include "core/npy.h"
#include "onnx/model_io.h"
#include "runtime/session.h"

namespace medq::cli {

namespace {

const char* kRunUsage =
    "usage: medq run MODEL.onnx INPUT... [options]\n"
    "  INPUT: PNG/JPEG image, DICOM file (.dcm or DICM magic), .npy or TensorProto .pb tensor\n"
    "  --top-k K          labels to print per input (default 3)\n"
    "  --batch N          inputs per inference call (default 8)\n"
    "  --threads T        worker threads (default: all cores)\n"
    "  --json             machine-readable output\n"
    "  --save-output F    write output 0 of the whole run as .npy\n"
    "  preprocessing overrides (default: model metadata 'preprocess'):\n"
    "  --color RGB|L  --resize W,H  --interpolation bilinear|nearest|bicubic|...\n"
    "  --scale S  --mean a,b,c  --std a,b,c  --layout NCHW|NHWC\n";

std::vector<float> softmax(const float* x, int64_t n) {
  std::vector<float> p(n);
  float mx = *std::max_element(x, x + n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += (p[i] = std::exp(x[i] - mx));
  for (auto& v : p) v = static_cast<float>(v / s);
  return p;
}

// Whether the values already look like probabilities (a softmax inside the model).
bool is_probability_row(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] < 0 || x[i] > 1) return false;
    s += x[i];
  }
  return std::fabs(s - 1.0) < 1e-3;
}

}  // namespace

int cmd_run(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2,
                       {"--top-k", "--batch", "--threads", "--save-output", "--color", "--resize", "--interpolation",
                        "--scale", "--mean", "--std", "--layout"},
                       {"--json", "--help"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help") || a.positional.size() < 2) {
    std::fprintf(a.has("--help") ? stdout : stderr, "%s", kRunUsage);
    return a.has("--help") ? 0 : 2;
  }
  auto top_k = a.get_int("--top-k", 3);
  auto batch = a.get_int("--batch", 8);
  auto threads = a.get_int("--threads", 0);
  if (!top_k.is_ok()) return report_error(top_k.status());
  if (!batch.is_ok()) return report_error(batch.status());
  if (!threads.is_ok()) return report_error(threads.status());
  if (top_k.value() < 1 || batch.value() < 1 || threads.value() < 0)
    return report_error(invalid_argument("--top-k and --batch must be >= 1, --threads >= 0"));

  auto mr = load_model(a.positional[0]);
  if (!mr.is_ok()) return report_error(mr.status());
  const Model& model = mr.value();
  SessionOptions so;
  so.num_threads = static_cast<int>(threads.value());
  auto sr = Session::create(model, so);
  if (!sr.is_ok()) return report_error(sr.status().with_context(a.positional[0]));
  const Session& sess = *sr.value();
  if (sess.graph().inputs.size() != 1)
    return report_error(invalid_argument(a.positional[0] + ": medq run needs a model with exactly one input (has " +
                                         std::to_string(sess.graph().inputs.size()) + ")"));
  auto pre = preprocess_json_for(model, a);
  if (!pre.is_ok()) return report_error(pre.status());
  const Value& in_v = sess.input_value(0);
  std::vector<std::string> labels = model_labels(model);

  std::vector<std::string> files(a.positional.begin() + 1, a.positional.end());
  nlohmann::json jout = nlohmann::json::array();
  std::vector<float> all_out;
  Shape out_row_shape;
  for (size_t start = 0; start < files.size(); start += batch.value()) {
    size_t end = std::min(files.size(), start + static_cast<size_t>(batch.value()));
    std::vector<Tensor> items;
    for (size_t i = start; i < end; ++i) {
      auto t = load_input(files[i], pre.value(), in_v.shape);
      if (!t.is_ok()) return report_error(t.status());
      items.push_back(std::move(t.value()));
    }
    auto x = items.size() == 1 ? Result<Tensor>(items[0]) : stack_batch(items);
    if (!x.is_ok()) return report_error(x.status());
    auto out = sess.run({x.value()});
    if (!out.is_ok()) return report_error(out.status().with_context(a.positional[0]));
    Tensor y = out.value()[0];
    if (y.dtype() != DataType::kFloat32) y = y.cast(DataType::kFloat32);
    if (y.rank() < 1 || y.dim(0) != static_cast<int64_t>(items.size()))
      return report_error(invalid_argument("output 0 has shape " + shape_str(y.shape()) +
                                           ", expected a leading batch axis of " + std::to_string(items.size())));
    int64_t n = y.numel() / y.dim(0);
    out_row_shape.assign(y.shape().begin() + 1, y.shape().end());
    const float* yd = y.data<float>();
    all_out.insert(all_out.end(), yd, yd + y.numel());
    for (size_t i = 0; i < items.size(); ++i) {
      const float* row = yd + i * n;
      std::vector<float> p = is_probability_row(row, n) ? std::vector<float>(row, row + n) : softmax(row, n);
      std::vector<int64_t> idx(n);
      std::iota(idx.begin(), idx.end(), 0);
      int64_t k = std::min<int64_t>(top_k.value(), n);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t l, int64_t r) { return p[l] > p[r]; });
      auto label_of = [&](int64_t c) {
        return c < static_cast<int64_t>(labels.size()) ? labels[c] : "class_" + std::to_string(c);
      };
      if (a.has("--json")) {
        nlohmann::json e;
        e["input"] = files[start + i];
        e["top"] = nlohmann::json::array();
        for (int64_t j = 0; j < k; ++j)
          e["top"].push_back({{"label", label_of(idx[j])}, {"index", idx[j]}, {"probability", p[idx[j]]}});
        e["logits"] = std::vector<float>(row, row + n);
        jout.push_back(e);
      } else {
        std::printf("%s\n", files[start + i].c_str());
        for (int64_t j = 0; j < k; ++j)
          std::printf("  %-24s %.4f\n", label_of(idx[j]).c_str(), p[idx[j]]);
      }
    }
  }
  if (a.has("--json")) std::printf("%s\n", nlohmann::json({{"model", a.positional[0]}, {"results", jout}}).dump(2).c_str());
  if (a.has("--save-output")) {
    Shape s = out_row_shape;
    s.insert(s.begin(), static_cast<int64_t>(files.size()));
    Status st = save_npy(Tensor::from_vector(all_out, s), a.get("--save-output"));
    if (!st.is_ok()) return report_error(st);
  }
  return 0;
}

}  // namespace medq::cli
