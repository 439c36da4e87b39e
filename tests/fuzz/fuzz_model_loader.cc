// libFuzzer target: ONNX model loading (protobuf parse, ONNX checker, shape
// inference, IR conversion), Session creation (graph passes, kernel creation)
// and, when every input shape is small and known (unknown dims -> 1), one run
// with zero-filled inputs. Any Status error is fine; crashes, hangs, ASan
// reports and huge allocations are bugs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "onnx/model_io.h"
#include "runtime/session.h"

namespace {

constexpr int64_t kMaxInputElems = 1 << 16;

bool make_zero_inputs(const medq::Session& s, std::vector<medq::Tensor>* inputs) {
  const medq::Graph& g = s.graph();
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    const medq::Value& v = s.input_value(i);
    if (v.dtype == medq::DataType::kUndefined || !medq::dtype_supported(v.dtype)) return false;
    medq::Shape shape;
    if (v.has_shape) {
      for (int64_t d : v.shape) shape.push_back(d < 0 ? 1 : d);
    }
    int64_t n = 1;
    for (int64_t d : shape) {
      if (d > kMaxInputElems) return false;
      n *= d;
      if (n > kMaxInputElems) return false;
    }
    inputs->push_back(medq::Tensor::zeros(v.dtype, shape));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  // A folder that does not exist: external data never resolves to real files.
  auto model = medq::load_model_from_bytes(bytes, "/nonexistent-medq-fuzz/model.onnx");
  if (!model.is_ok()) return 0;
  medq::SessionOptions opts;
  opts.num_threads = 1;
  opts.verify_passes = true;
  auto session = medq::Session::create(model.value(), opts);
  if (!session.is_ok()) return 0;
  std::vector<medq::Tensor> inputs;
  if (!make_zero_inputs(*session.value(), &inputs)) return 0;
  auto out = session.value()->run(inputs);
  (void)out;
  return 0;
}
