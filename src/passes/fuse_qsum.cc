// int8 residual fusion: QConv -> QAdd  =>  QConv with a Sum input (oneDNN sum post-op).
//
//   A_q = QConv(X_q, W)           (no activation, A_q used only by the QAdd)
//   Y_q = QAdd(A_q, B_q)          [-> Relu | Clip]
// becomes
//   Y_q = QConv(X_q, W, bias, Sum = B_q; y_* = QAdd's y_*, activation = QAdd's,
//               sum_scale = b_scale, sum_zero_point = b_zero_point)
// computed by oneDNN as
//   y = zp_y + act(clip(x_s * w_s * (acc + bias), A_lo, A_hi) / y_s + b_s / y_s * (B_q - zp_b))
// where [A_lo, A_hi] is the real range A_q could hold: its saturation is part of
// the graph's meaning (a Relu folded into A_q's zero point lives only there).
//
// Why: the QAdd of every ResNet/MobileNetV2 residual block re-reads two 8-bit
// tensors and writes a third (22% of resnet50's int8 time at batch 8, one
// thread); as a post-op it is one more read in the convolution's epilogue.
// Numerics: the convolution result is no longer rounded to A_q's 8-bit grid
// before the add, so an output may differ from the unfused QDQ graph by one
// quantization step (it is closer to the real-valued sum, not further).
// Only applied where the dnnl QConv kernel accepts the fused node (the ref
// QConv has no Sum input), and B_q must have Y_q's type and shape. Runs after
// dead-code elimination so that A_q's consumer count no longer includes the
// DequantizeLinear nodes the QDQ fusion left behind.
#include "ops/fused.h"
#include "passes/pass.h"

namespace medq {
namespace {

class FuseQSumPass : public Pass {
 public:
  const char* name() const override { return "qsum"; }
  Status run(Graph& g, PassContext& ctx, bool& changed) override {
    if (!backend_allowed(ctx, "dnnl")) return Status::ok();
    bool any = false;
    for (size_t ai = 0; ai < g.nodes.size(); ++ai) {
      Node& add = g.nodes[ai];
      if (add.dead || add.domain != kMedqDomain || add.op_type != "QAdd" || add.inputs.size() != 2 ||
          add.outputs.size() != 1)
        continue;
      const uint32_t y = add.outputs[0];
      const DataType ydt = g.value(y).dtype;
      for (int side = 0; side < 2; ++side) {
        const uint32_t a = add.inputs[side], b = add.inputs[1 - side];
        if (a == b || g.is_graph_output(a) || g.value(a).consumers.size() != 1) continue;
        const uint32_t ci = g.value(a).producer;
        if (ci == kNoNode) continue;
        const Node& conv = g.nodes[ci];
        if (conv.dead || conv.domain != kMedqDomain || conv.op_type != "QConv" || conv.has_input(3)) continue;
        if (!conv.attr_s("activation", "").empty()) continue;
        const Value& vb = g.value(b);
        if (vb.dtype != ydt || !vb.has_shape || !g.value(y).has_shape || vb.shape != g.value(y).shape) continue;
        Node f = conv;
        f.name = conv.name;
        while (f.inputs.size() < 3) f.inputs.push_back(kNoValue);
        f.inputs.push_back(b);
        f.outputs = {y};
        const std::string sa = side == 0 ? "b" : "a";  // the QAdd operand that becomes the Sum input
        f.set_attr(Attribute::make_float("sum_scale", add.attr_f(sa + "_scale", 0.f)));
        f.set_attr(Attribute::make_int("sum_zero_point", add.attr_i(sa + "_zero_point", 0)));
        {
          // A_q's own quantization saturates (that is how a Relu/Clip before it was
          // folded away): keep that clamp, in real units, ahead of the sum.
          const float s = conv.attr_f("y_scale", 1.f);
          const int64_t z = conv.attr_i("y_zero_point", 0);
          const bool u8 = conv.attr_i("output_dtype", 2) == static_cast<int64_t>(DataType::kUInt8);
          const float qlo = u8 ? 0.f : -128.f, qhi = u8 ? 255.f : 127.f;
          f.set_attr(Attribute::make_floats("pre_sum_clip", {(qlo - z) * s, (qhi - z) * s}));
        }
        f.set_attr(Attribute::make_float("y_scale", add.attr_f("y_scale", 1.f)));
        f.set_attr(Attribute::make_int("y_zero_point", add.attr_i("y_zero_point", 0)));
        f.set_attr(Attribute::make_int("output_dtype", add.attr_i("output_dtype", 2)));
        f.remove_attr("activation");
        f.remove_attr("activation_params");
        if (const Attribute* act = add.attr("activation")) f.set_attr(*act);
        if (const Attribute* ap = add.attr("activation_params")) f.set_attr(*ap);
        if (!dnnl_accepts(g, f, ctx.opset)) continue;
        ctx.log.push_back("qsum: fused " + add.label() + " into " + conv.label());
        g.nodes[ci] = std::move(f);
        add.dead = true;
        any = true;
        break;
      }
    }
    if (any) changed = true;
    return Status::ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_fuse_qsum_pass() { return std::make_unique<FuseQSumPass>(); }

}  // namespace medq
