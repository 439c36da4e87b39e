// Reference shape / data-movement kernels (tensor_ops.cc, tensor_movement.cc,
// tensor_resize.cc): small hand-checked cases plus expected errors. The ONNX
// backend suite (tests/onnx_backend) covers the op semantics more widely.
#include <gtest/gtest.h>

#include "ref_op_runner.h"

namespace medq {
namespace {

using testing_ref::cst;
using testing_ref::f32;
using testing_ref::i64;
using testing_ref::in;
using testing_ref::iota_f32;
using testing_ref::none;
using testing_ref::OpSpec;
using testing_ref::run_op;

std::vector<float> vals(const Tensor& t) { return t.to_f32_vector(); }

OpSpec spec(const std::string& op, std::vector<Attribute> attrs = {}, int num_outputs = 1) {
  OpSpec s;
  s.op_type = op;
  s.attrs = std::move(attrs);
  s.num_outputs = num_outputs;
  return s;
}

TEST(TensorOps, ReshapeCopiesZeroAndInfersMinusOne) {
  auto r = run_op(spec("Reshape"), {in(iota_f32({2, 3, 4})), cst(i64({0, -1, 2}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].shape(), (Shape{2, 6, 2}));
  EXPECT_EQ(vals(r.value()[0])[7], 7.0f);
}

TEST(TensorOps, ReshapeBadSizeNamesNode) {
  auto r = run_op(spec("Reshape"), {in(iota_f32({2, 3})), cst(i64({4, 2}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("Reshape 'node0'"), std::string::npos) << r.status().message();
}

TEST(TensorOps, TransposeAndSliceNegativeStep) {
  auto t = run_op(spec("Transpose", {Attribute::make_ints("perm", {1, 0})}), {in(iota_f32({2, 3}))});
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  EXPECT_EQ(vals(t.value()[0]), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  auto s = run_op(spec("Slice"), {in(iota_f32({2, 5})), cst(i64({-1})), cst(i64({-100})), cst(i64({1})),
                                  cst(i64({-2}))});
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s.value()[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(vals(s.value()[0]), (std::vector<float>{4, 2, 0, 9, 7, 5}));
}

TEST(TensorOps, ConcatSplitRoundTrip) {
  auto c = run_op(spec("Concat", {Attribute::make_int("axis", 1)}), {in(iota_f32({2, 1})), in(iota_f32({2, 2}))});
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(vals(c.value()[0]), (std::vector<float>{0, 0, 1, 1, 2, 3}));
  auto s = run_op(spec("Split", {Attribute::make_int("axis", 1)}, 2), {in(c.value()[0]), cst(i64({1, 2}))});
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(vals(s.value()[1]), (std::vector<float>{0, 1, 2, 3}));
}

TEST(TensorOps, GatherNegativeIndexAndOutOfRange) {
  auto g = run_op(spec("Gather", {Attribute::make_int("axis", 0)}), {in(iota_f32({3, 2})), in(i64({-1, 0}))});
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  EXPECT_EQ(vals(g.value()[0]), (std::vector<float>{4, 5, 0, 1}));
  auto bad = run_op(spec("Gather"), {in(iota_f32({3, 2})), in(i64({3}))});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("out of range"), std::string::npos) << bad.status().message();
}

TEST(TensorOps, ScatterElementsWithReduction) {
  Tensor idx = Tensor::from_vector<int64_t>({1, 1, 0}, {1, 3});
  auto r = run_op(spec("ScatterElements", {Attribute::make_int("axis", 1), Attribute::make_string("reduction", "add")}),
                  {in(f32({1, 2, 3}, {1, 3})), in(idx), in(f32({10, 20, 30}, {1, 3}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(vals(r.value()[0]), (std::vector<float>{31, 32, 3}));
  auto bad = run_op(spec("ScatterElements"), {in(f32({1, 2, 3}, {1, 3})), in(Tensor::from_vector<int64_t>({5}, {1, 1})),
                                              in(f32({1}, {1, 1}))});
  EXPECT_FALSE(bad.is_ok());
}

TEST(TensorOps, ScatterNDReplacesSlices) {
  Tensor idx = Tensor::from_vector<int64_t>({2, 0}, {2, 1});
  auto r = run_op(spec("ScatterND"), {in(iota_f32({3, 2})), in(idx), in(f32({-1, -2, -3, -4}, {2, 2}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(vals(r.value()[0]), (std::vector<float>{-3, -4, 2, 3, -1, -2}));
}

TEST(TensorOps, OneHotCompressReverseSequence) {
  auto oh = run_op(spec("OneHot", {Attribute::make_int("axis", -1)}),
                   {in(i64({0, -1, 5})), cst(Tensor::scalar<int64_t>(3)), cst(f32({0, 1}, {2}))});
  ASSERT_TRUE(oh.is_ok()) << oh.status().message();
  EXPECT_EQ(oh.value()[0].shape(), (Shape{3, 3}));
  EXPECT_EQ(vals(oh.value()[0]), (std::vector<float>{1, 0, 0, 0, 0, 1, 0, 0, 0}));

  Tensor cond = Tensor::from_vector<bool>({false, true, true}, {3});
  auto c = run_op(spec("Compress", {Attribute::make_int("axis", 0)}), {in(iota_f32({3, 2})), in(cond)});
  ASSERT_TRUE(c.is_ok()) << c.status().message();
  EXPECT_EQ(vals(c.value()[0]), (std::vector<float>{2, 3, 4, 5}));

  // time_axis 0, batch_axis 1: [T=3, B=2], lens {3, 1}.
  auto rs = run_op(spec("ReverseSequence"), {in(iota_f32({3, 2})), in(i64({3, 1}))});
  ASSERT_TRUE(rs.is_ok()) << rs.status().message();
  EXPECT_EQ(vals(rs.value()[0]), (std::vector<float>{4, 1, 2, 3, 0, 5}));
}

TEST(TensorOps, PadReflectAndExpand) {
  auto p = run_op(spec("Pad", {Attribute::make_string("mode", "reflect")}), {in(f32({1, 2, 3}, {3})), cst(i64({2, 1}))});
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  EXPECT_EQ(vals(p.value()[0]), (std::vector<float>{3, 2, 1, 2, 3, 2}));
  auto e = run_op(spec("Expand"), {in(f32({1, 2}, {2, 1})), cst(i64({2, 3}))});
  ASSERT_TRUE(e.is_ok()) << e.status().message();
  EXPECT_EQ(vals(e.value()[0]), (std::vector<float>{1, 1, 1, 2, 2, 2}));
}

TEST(TensorOps, ResizeNearestAndMissingInput) {
  auto r = run_op(spec("Resize", {Attribute::make_string("mode", "nearest")}),
                  {in(f32({1, 2, 3, 4}, {1, 1, 2, 2})), none(), cst(f32({1, 1, 2, 2}, {4}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].shape(), (Shape{1, 1, 4, 4}));
  EXPECT_EQ(vals(r.value()[0])[5], 1.0f);
  EXPECT_EQ(vals(r.value()[0])[15], 4.0f);
  auto bad = run_op(spec("Transpose", {Attribute::make_ints("perm", {0, 0})}), {in(iota_f32({2, 3}))});
  EXPECT_FALSE(bad.is_ok());
}


TEST(TensorOps, UniqueSortedAndUnsorted) {
  Tensor x = f32({2, 1, 1, 3, 4, 3}, {6});
  auto r = run_op(spec("Unique", {}, 4), {in(x)});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(vals(r.value()[0]), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(r.value()[1].to_i64_vector(), (std::vector<int64_t>{1, 0, 3, 4}));
  EXPECT_EQ(r.value()[2].to_i64_vector(), (std::vector<int64_t>{1, 0, 0, 2, 3, 2}));
  EXPECT_EQ(r.value()[3].to_i64_vector(), (std::vector<int64_t>{2, 1, 2, 1}));
  auto u = run_op(spec("Unique", {Attribute::make_int("sorted", 0)}, 1), {in(x)});
  ASSERT_TRUE(u.is_ok()) << u.status().message();
  EXPECT_EQ(vals(u.value()[0]), (std::vector<float>{2, 1, 3, 4}));
}

TEST(TensorOps, NonMaxSuppressionAndGridSample) {
  // Two overlapping boxes (IoU 0.81) and one apart; the lower-scored overlap is dropped.
  Tensor boxes = f32({0, 0, 1, 1, 0, 0.1f, 1, 1.1f, 0, 5, 1, 6}, {1, 3, 4});
  Tensor scores = f32({0.9f, 0.8f, 0.7f}, {1, 1, 3});
  auto n = run_op(spec("NonMaxSuppression"), {in(boxes), in(scores), cst(i64({10})), cst(f32({0.5f}, {1})),
                                               cst(f32({0.0f}, {1}))});
  ASSERT_TRUE(n.is_ok()) << n.status().message();
  EXPECT_EQ(n.value()[0].shape(), (Shape{2, 3}));
  EXPECT_EQ(n.value()[0].to_i64_vector(), (std::vector<int64_t>{0, 0, 0, 0, 0, 2}));
  // align_corners grid corners hit the image corners exactly; the centre averages all four.
  Tensor img = f32({1, 2, 3, 4}, {1, 1, 2, 2});
  Tensor grid = f32({-1, -1, 1, 1, 0, 0}, {1, 1, 3, 2});
  auto g = run_op(spec("GridSample", {Attribute::make_int("align_corners", 1)}), {in(img), in(grid)});
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  EXPECT_EQ(vals(g.value()[0]), (std::vector<float>{1, 4, 2.5f}));
}

}  // namespace
}  // namespace medq
