// Static (calibrated) and dynamic int8 quantization writing standard ONNX QDQ
// models (opset >= 13) that ONNX Runtime, TensorRT, OpenVINO and medq run.
//
// Conventions follow ONNX Runtime's QDQ quantizer:
//  * weights: int8 symmetric ([-127, 127], zero point 0), per output channel
//    (Conv axis 0, Gemm axis 0 with transB=1 else 1, MatMul axis 1) or per tensor;
//    stored as int8 initializers + DequantizeLinear.
//  * bias of Conv/Gemm: int32 initializer, scale = x_scale * w_scale[c], zero point 0,
//    + DequantizeLinear (Gemm only with alpha = beta = 1 and a 1-D bias).
//  * activations: one QuantizeLinear -> DequantizeLinear pair per tensor shared by
//    all quantized consumers, uint8 asymmetric (or int8, or symmetric); the range
//    always contains 0. Graph inputs/outputs stay float; the final outputs are not
//    quantized unless asked.
//  * Conv/Gemm/MatMul/Add -> Relu (or Clip(0, hi)): the pair goes after the
//    activation with the activation's range; when that range makes the Q clamp
//    exactly like the activation (zero point == qmin), the Relu/Clip is removed
//    (ORT's ReluQuantFusion) so DQ -> Conv -> Q patterns can be fused into int8 kernels.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "core/tensor.h"
#include "ir/graph.h"
#include "quant/calibration.h"

namespace medq {

struct QuantizeOptions {
  std::string mode = "static";  // "static" | "dynamic"
  CalibMethod method = CalibMethod::kMinMax;
  double percentile = 99.99;
  DataType activation_dtype = DataType::kUInt8;  // kUInt8 | kInt8
  bool symmetric_activations = false;
  bool per_channel = true;
  std::vector<std::string> exclude;  // node names or op types kept in fp32
  bool quantize_outputs = false;     // also quantize values that are graph outputs
  int num_bins = 4096;               // calibration histogram bins over [-R, R]
  bool bias_correction = true;       // fold the mean shift of int8 weight rounding into the bias
  int num_threads = 0;               // calibration session threads (0: all cores)
};

struct QParams {
  float scale = 1;
  int32_t zero_point = 0;
  DataType dtype = DataType::kUInt8;
};

// ORT's compute_scale_zp: range extended to contain 0; symmetric ranges use
// [-127, 127] for int8 (zp 0) and zp 128 for uint8.
QParams activation_qparams(float lo, float hi, DataType dtype, bool symmetric);

// Identity elimination, constant folding, BN folding and DCE (no medq-private ops),
// then raises the default opset to 13 when it is lower (see raise_opset_to_13).
Status prepare_for_quantization(Model& m);
// Re-stamps the model at opset 13 when every op present has the same semantics
// there; otherwise an error naming the op.
Status raise_opset_to_13(Model& m);

struct StaticPlan {
  std::vector<uint32_t> nodes;        // node ids quantized (in the prepared graph)
  std::set<std::string> tensors;      // activation tensors to calibrate
  std::vector<std::string> excluded;  // labels of nodes kept fp32 by --exclude
  std::vector<std::string> float_with_producer;  // Relu/Clip kept float because their producer is
};
Result<StaticPlan> plan_static(const Model& m, const QuantizeOptions& o);

// Inserts Q/DQ pairs and quantized weights into the prepared model `m` (the one
// `plan` was made from) using calibration statistics. Returns the report JSON
// (per-layer ranges, scales, zero points, sizes, excluded layers).
Result<nlohmann::json> write_qdq(Model& m, const StaticPlan& plan,
                                 const std::map<std::string, StreamingHistogram>& stats, const QuantizeOptions& o);

// Produces calibration batches (positional graph inputs). Returns false when done.
using BatchSource = std::function<Result<bool>(std::vector<Tensor>& inputs)>;
// Called after each calibration batch with the number of samples seen so far.
using ProgressFn = std::function<void(int64_t samples)>;

// Calibration statistics of the planned tensors, streamed batch by batch through a
// medq Session (fp32, unoptimized so every planned tensor is observed). Memory is
// bounded: one fixed-size histogram per tensor, whatever the sample count.
struct CalibrationResult {
  std::map<std::string, StreamingHistogram> stats;
  int64_t samples = 0, batches = 0;
  int64_t histogram_bytes = 0;  // bytes of histogram bins held (tensors x bins x 8)
  double seconds = 0;
};
Result<CalibrationResult> calibrate_static(const Model& prepared, const StaticPlan& plan, const QuantizeOptions& o,
                                           const BatchSource& next, const ProgressFn& progress = nullptr);

// Stores the "medq.quantization" metadata (method, samples, types, excluded and
// fp32 fallback layers).
void set_quantization_metadata(Model& m, const QuantizeOptions& o, const StaticPlan& plan, int64_t samples,
                               const std::vector<std::string>& fp32_fallback = {});

// Full static flow: prepare, plan, calibrate (a medq Session with the observer;
// statistics streamed per batch), write QDQ, add "medq.quantization" metadata.
// The report has "samples" = calibration samples used.
Result<nlohmann::json> quantize_static(Model& m, const QuantizeOptions& o, const BatchSource& next,
                                       const ProgressFn& progress = nullptr);

// Dynamic quantization: int8 per-channel weights of MatMul/Gemm + DequantizeLinear,
// activations DynamicQuantizeLinear -> DequantizeLinear. Refuses models with
// (non-excluded) Conv. Prepares the model itself.
Result<nlohmann::json> quantize_dynamic(Model& m, const QuantizeOptions& o);

// Sum of the bytes of the initializers the graph uses.
int64_t initializer_bytes(const Graph& g);

// Serializes `m`, re-loads the bytes through the ONNX checker + shape inference
// (so an invalid model is never written), then writes `path` atomically.
// Returns the number of bytes written. intermediate_value_info = false leaves out the
// graph's value_info (types/shapes of intermediate tensors): optional in ONNX and
// re-derived by shape inference on load (ORT and medq both run it), ~10% of a small
// QDQ file's bytes. Graph inputs/outputs keep their types and shapes.
Result<int64_t> save_model_checked(const Model& m, const std::string& path, bool intermediate_value_info = true);

}  // namespace medq
