// `medq run MODEL INPUT...`: preprocesses each input (image, DICOM, .npy,
// .pb), runs the model in batches and prints the top-k labels with softmax
// probabilities (or raw outputs with --raw), as text or --json.
#include <algorithm>
#include <cmath>
#include <cstring>
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
    "         (a tensor [N, ...] in the model input's shape is N rows)\n"
    "  --top-k K          labels to print per input (default 3)\n"
    "  --batch N          inputs per inference call (default 8)\n"
    "  --threads T        worker threads (default: all cores)\n"
    "  --json             machine-readable output\n"
    "  --save-output F    write output 0 of the whole run as .npy\n"
    "  --quiet            no warning about assumed preprocessing\n";

}  // namespace

int cmd_run(int argc, char** argv) {
  auto pa = parse_args(argc, argv, 2, with_spec_flags({"--top-k", "--batch", "--threads", "--save-output"}),
                       {"--json", "--help", "--quiet"});
  if (!pa.is_ok()) return report_error(pa.status());
  const Args& a = pa.value();
  if (a.has("--help") || a.positional.size() < 2) {
    std::fprintf(a.has("--help") ? stdout : stderr, "%s%s", kRunUsage, spec_override_usage());
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
  auto spec_r = model_spec_for(model, a, a.positional[0]);
  if (!spec_r.is_ok()) return report_error(spec_r.status());
  const ModelSpec& spec = spec_r.value();
  const std::vector<std::string>& labels = spec.labels;

  std::vector<std::string> files(a.positional.begin() + 1, a.positional.end());
  nlohmann::json jout = nlohmann::json::array();
  std::vector<float> all_out;
  Shape out_row_shape;
  int64_t total_rows = 0;
  // Rows waiting for a batch: (name, [1, ...] tensor).
  std::vector<std::pair<std::string, Tensor>> pending;
  auto run_pending = [&]() -> Status {
    if (pending.empty()) return Status::ok();
    std::vector<Tensor> items;
    for (auto& p : pending) items.push_back(p.second);
    ASSIGN_OR_RETURN(Tensor x, stack_batch(items));
    auto out = sess.run({x});
    if (!out.is_ok()) return out.status().with_context(a.positional[0]);
    Tensor y = out.value()[0];
    if (y.dtype() != DataType::kFloat32) y = y.cast(DataType::kFloat32);
    const int64_t rows = static_cast<int64_t>(pending.size());
    if (y.rank() < 1 || y.dim(0) != rows)
      return invalid_argument(a.positional[0] + ": output 0 has shape " + shape_str(y.shape()) +
                              ", expected a leading batch axis of " + std::to_string(rows));
    int64_t n = y.numel() / y.dim(0);
    if (n < 1) return invalid_argument(a.positional[0] + ": output 0 is empty " + shape_str(y.shape()));
    out_row_shape.assign(y.shape().begin() + 1, y.shape().end());
    const float* yd = y.data<float>();
    all_out.insert(all_out.end(), yd, yd + y.numel());
    total_rows += rows;
    const int64_t classes = classes_of_outputs(n);
    std::vector<float> p(static_cast<size_t>(classes));
    for (int64_t i = 0; i < rows; ++i) {
      const float* row = yd + i * n;
      class_probabilities(row, n, spec.outputs, p.data());
      std::vector<int64_t> idx(classes);
      std::iota(idx.begin(), idx.end(), 0);
      int64_t k = std::min<int64_t>(top_k.value(), classes);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t l, int64_t r) { return p[l] > p[r]; });
      auto label_of = [&](int64_t c) {
        return c < static_cast<int64_t>(labels.size()) ? labels[c] : "class_" + std::to_string(c);
      };
      const std::string& name = pending[i].first;
      if (a.has("--json")) {
        nlohmann::json e;
        e["input"] = name;
        e["top"] = nlohmann::json::array();
        for (int64_t j = 0; j < k; ++j)
          e["top"].push_back({{"label", label_of(idx[j])}, {"index", idx[j]}, {"probability", p[idx[j]]}});
        e["outputs"] = std::vector<float>(row, row + n);
        e["output_kind"] = output_kind_name(spec.outputs);
        e["probabilities"] = p;
        if (spec.outputs == OutputKind::kLogits) e["logits"] = e["outputs"];
        jout.push_back(e);
      } else {
        std::printf("%s\n", name.c_str());
        for (int64_t j = 0; j < k; ++j) std::printf("  %-24s %.4f\n", label_of(idx[j]).c_str(), p[idx[j]]);
      }
    }
    pending.clear();
    return Status::ok();
  };
  for (const std::string& f : files) {
    auto t = load_input(f, spec);
    if (!t.is_ok()) return report_error(t.status());
    const Tensor& x = t.value();
    const int64_t rows = x.dim(0);
    Shape rs = x.shape();
    rs[0] = 1;
    const size_t row_bytes = x.nbytes() / static_cast<size_t>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      Tensor row(x.dtype(), rs);
      std::memcpy(row.raw(), static_cast<const uint8_t*>(x.raw()) + r * row_bytes, row_bytes);
      pending.emplace_back(rows == 1 ? f : f + "[" + std::to_string(r) + "]", std::move(row));
      if (static_cast<int64_t>(pending.size()) >= batch.value())
        if (Status st = run_pending(); !st.is_ok()) return report_error(st);
    }
  }
  if (Status st = run_pending(); !st.is_ok()) return report_error(st);
  if (a.has("--json")) std::printf("%s\n", nlohmann::json({{"model", a.positional[0]}, {"results", jout}}).dump(2).c_str());
  if (a.has("--save-output")) {
    Shape s = out_row_shape;
    s.insert(s.begin(), total_rows);
    Status st = save_npy(Tensor::from_vector(all_out, s), a.get("--save-output"));
    if (!st.is_ok()) return report_error(st);
  }
  return 0;
}

}  // namespace medq::cli
