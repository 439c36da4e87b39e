// Reference Conv / ConvTranspose / pooling kernels against naive loops written
// from the ONNX definitions, over a small sweep of shapes and attributes.
#include <gtest/gtest.h>

#include <cmath>

#include "ref_op_runner.h"

namespace medq {
namespace {

using testing_ref::cst;
using testing_ref::f32;
using testing_ref::i64;
using testing_ref::in;
using testing_ref::iota_f32;
using testing_ref::OpSpec;
using testing_ref::random_tensor;
using testing_ref::run_op;

struct ConvCase {
  int64_t n, c, m, h, w, kh, kw, group, stride, dil, pad;
};

// Naive 2-D conv: y[n,m,oh,ow] = b[m] + sum x[n, g*Cg+c, oh*s-p+kh*d, ow*s-p+kw*d] * W[m,c,kh,kw].
Tensor naive_conv(const Tensor& x, const Tensor& wt, const Tensor& b, const ConvCase& k) {
  const int64_t oh_n = (k.h + 2 * k.pad - ((k.kh - 1) * k.dil + 1)) / k.stride + 1;
  const int64_t ow_n = (k.w + 2 * k.pad - ((k.kw - 1) * k.dil + 1)) / k.stride + 1;
  Tensor y = Tensor::zeros(DataType::kFloat32, {k.n, k.m, oh_n, ow_n});
  const int64_t cg = k.c / k.group, mg = k.m / k.group;
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t m = 0; m < k.m; ++m)
      for (int64_t oh = 0; oh < oh_n; ++oh)
        for (int64_t ow = 0; ow < ow_n; ++ow) {
          double acc = b.data<float>()[m];
          const int64_t g = m / mg;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t a = 0; a < k.kh; ++a)
              for (int64_t bb = 0; bb < k.kw; ++bb) {
                const int64_t ih = oh * k.stride - k.pad + a * k.dil, iw = ow * k.stride - k.pad + bb * k.dil;
                if (ih < 0 || ih >= k.h || iw < 0 || iw >= k.w) continue;
                acc += x.data<float>()[((n * k.c + g * cg + c) * k.h + ih) * k.w + iw] *
                       wt.data<float>()[((m * cg + c) * k.kh + a) * k.kw + bb];
              }
          y.data<float>()[((n * k.m + m) * oh_n + oh) * ow_n + ow] = static_cast<float>(acc);
        }
  return y;
}

void expect_close(const Tensor& got, const Tensor& want, float tol = 1e-4f) {
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < want.numel(); ++i)
    ASSERT_NEAR(got.data<float>()[i], want.data<float>()[i], tol * (1 + std::fabs(want.data<float>()[i]))) << "at " << i;
}

std::vector<Attribute> conv_attrs(const ConvCase& k) {
  return {Attribute::make_ints("strides", {k.stride, k.stride}), Attribute::make_ints("dilations", {k.dil, k.dil}),
          Attribute::make_ints("pads", {k.pad, k.pad, k.pad, k.pad}), Attribute::make_int("group", k.group)};
}

TEST(ConvPool, ConvMatchesNaiveSweep) {
  std::mt19937 rng(7);
  const ConvCase cases[] = {{1, 3, 8, 9, 7, 3, 3, 1, 1, 1, 1},  {2, 4, 6, 8, 8, 3, 3, 2, 2, 1, 1},
                            {1, 6, 6, 7, 9, 3, 3, 6, 1, 2, 2},  {1, 5, 7, 6, 5, 1, 1, 1, 1, 1, 0},
                            {1, 8, 16, 10, 10, 5, 3, 4, 3, 1, 2}};
  for (const auto& k : cases) {
    Tensor x = random_tensor({k.n, k.c, k.h, k.w}, rng);
    Tensor w = random_tensor({k.m, k.c / k.group, k.kh, k.kw}, rng);
    Tensor b = random_tensor({k.m}, rng);
    OpSpec s{"Conv", "", conv_attrs(k)};
    for (bool const_w : {true, false}) {
      auto r = run_op(s, {in(x), const_w ? cst(w) : in(w), cst(b)});
      ASSERT_TRUE(r.is_ok()) << r.status().message();
      expect_close(r.value()[0], naive_conv(x, w, b, k));
    }
  }
}

TEST(ConvPool, ConvKernelShapeMismatchIsAnError) {
  OpSpec s{"Conv", "", {Attribute::make_ints("kernel_shape", {5, 5})}};
  auto r = run_op(s, {in(iota_f32({1, 1, 6, 6})), cst(iota_f32({1, 1, 3, 3}))});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("kernel_shape"), std::string::npos) << r.status().message();
}

// ConvTranspose is the adjoint of Conv: <conv(x), y> == <x, convT(y)> for the
// same W (no bias), which checks strides, pads, dilations and groups at once.
TEST(ConvPool, ConvTransposeIsAdjointOfConv) {
  std::mt19937 rng(11);
  const ConvCase cases[] = {{1, 2, 4, 7, 7, 3, 3, 1, 2, 1, 1}, {2, 4, 6, 8, 6, 3, 2, 2, 1, 2, 1},
                            {1, 3, 3, 6, 6, 2, 2, 3, 2, 1, 0}};
  for (const auto& k : cases) {
    Tensor x = random_tensor({k.n, k.c, k.h, k.w}, rng);
    Tensor w = random_tensor({k.m, k.c / k.group, k.kh, k.kw}, rng);
    Tensor zero = Tensor::zeros(DataType::kFloat32, {k.m});
    Tensor cx = naive_conv(x, w, zero, k);
    Tensor y = random_tensor(cx.shape(), rng);
    // ConvTranspose W is [C_in(=conv M), M/group(=conv C/group), kh, kw]: the same tensor.
    std::vector<Attribute> attrs = conv_attrs(k);
    // output_padding restores the rows/cols a strided conv drops.
    const int64_t dkh = (k.kh - 1) * k.dil + 1, dkw = (k.kw - 1) * k.dil + 1;
    attrs.push_back(Attribute::make_ints("output_padding", {k.h - (k.stride * (cx.dim(2) - 1) + dkh - 2 * k.pad),
                                                            k.w - (k.stride * (cx.dim(3) - 1) + dkw - 2 * k.pad)}));
    auto r = run_op(OpSpec{"ConvTranspose", "", attrs}, {in(y), cst(w)});
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    const Tensor& ty = r.value()[0];
    ASSERT_EQ(ty.shape(), x.shape());
    double lhs = 0, rhs = 0;
    for (int64_t i = 0; i < cx.numel(); ++i) lhs += cx.data<float>()[i] * y.data<float>()[i];
    for (int64_t i = 0; i < x.numel(); ++i) rhs += x.data<float>()[i] * ty.data<float>()[i];
    EXPECT_NEAR(lhs, rhs, 1e-3 * (1 + std::fabs(lhs)));
  }
}

TEST(ConvPool, ConvTransposeShapes) {
  // Default: stride * (in - 1) + k - pads; output_padding adds at the end; SAME_UPPER gives in * stride.
  auto r = run_op(OpSpec{"ConvTranspose", "", {Attribute::make_ints("strides", {3, 2}),
                                               Attribute::make_ints("output_padding", {1, 1})}},
                  {in(iota_f32({1, 1, 3, 3})), cst(iota_f32({1, 2, 3, 3}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r.value()[0].shape(), (Shape{1, 2, 10, 8}));
  auto s = run_op(OpSpec{"ConvTranspose", "", {Attribute::make_ints("strides", {2, 2}),
                                               Attribute::make_string("auto_pad", "SAME_UPPER")}},
                  {in(iota_f32({1, 1, 3, 3})), cst(iota_f32({1, 2, 3, 3}))});
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  EXPECT_EQ(s.value()[0].shape(), (Shape{1, 2, 6, 6}));
  auto bad = run_op(OpSpec{"ConvTranspose", "", {}}, {in(iota_f32({1, 2, 3, 3})), cst(iota_f32({1, 2, 3, 3}))});
  EXPECT_FALSE(bad.is_ok());
}

TEST(ConvPool, MaxPoolIndicesAndMaxUnpool) {
  Tensor x = f32({1, 5, 2, 0, 3, 4, 9, 8, 7, 6, 1, 2, 0, 0, 3, 1}, {1, 1, 4, 4});
  std::vector<Attribute> a = {Attribute::make_ints("kernel_shape", {2, 2}), Attribute::make_ints("strides", {2, 2})};
  auto p = run_op(OpSpec{"MaxPool", "", a, 17, 2}, {in(x)});
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  EXPECT_EQ(p.value()[0].to_f32_vector(), (std::vector<float>{5, 9, 7, 3}));
  EXPECT_EQ(p.value()[1].to_i64_vector(), (std::vector<int64_t>{1, 6, 8, 14}));
  auto u = run_op(OpSpec{"MaxUnpool", "", a}, {in(p.value()[0]), in(p.value()[1])});
  ASSERT_TRUE(u.is_ok()) << u.status().message();
  EXPECT_EQ(u.value()[0].to_f32_vector(), (std::vector<float>{0, 5, 0, 0, 0, 0, 9, 0, 7, 0, 0, 0, 0, 0, 3, 0}));
  auto bad = run_op(OpSpec{"MaxUnpool", "", a},
                    {in(p.value()[0]), in(Tensor::from_vector<int64_t>({0, 1, 2, 99}, {1, 1, 2, 2}))});
  EXPECT_FALSE(bad.is_ok());
}

TEST(ConvPool, AveragePoolCountIncludePad) {
  Tensor x = f32({1, 2, 3, 4}, {1, 1, 2, 2});
  std::vector<Attribute> a = {Attribute::make_ints("kernel_shape", {2, 2}), Attribute::make_ints("pads", {1, 1, 0, 0})};
  auto ex = run_op(OpSpec{"AveragePool", "", a}, {in(x)});
  ASSERT_TRUE(ex.is_ok()) << ex.status().message();
  EXPECT_EQ(ex.value()[0].to_f32_vector(), (std::vector<float>{1, 1.5f, 2, 2.5f}));
  a.push_back(Attribute::make_int("count_include_pad", 1));
  auto inc = run_op(OpSpec{"AveragePool", "", a}, {in(x)});
  ASSERT_TRUE(inc.is_ok()) << inc.status().message();
  EXPECT_EQ(inc.value()[0].to_f32_vector(), (std::vector<float>{0.25f, 0.75f, 1, 2.5f}));
  auto g = run_op(OpSpec{"GlobalAveragePool", "", {}}, {in(x)});
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  EXPECT_EQ(g.value()[0].shape(), (Shape{1, 1, 1, 1}));
  EXPECT_EQ(g.value()[0].to_f32_vector()[0], 2.5f);
}


TEST(ConvPool, RoiAlignAverageOfConstantRegion) {
  // A constant image gives the constant for any roi inside it; a ramp gives the bin centres.
  Tensor x(DataType::kFloat32, {1, 1, 8, 8});
  for (int64_t i = 0; i < 64; ++i) x.data<float>()[i] = static_cast<float>(i % 8);  // value = column
  std::vector<Attribute> a = {Attribute::make_int("output_height", 2), Attribute::make_int("output_width", 2),
                              Attribute::make_int("sampling_ratio", 2)};
  auto r = run_op(OpSpec{"RoiAlign", "", a, 16}, {in(x), in(f32({1.5f, 1.5f, 5.5f, 5.5f}, {1, 4})), in(i64({0}))});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  // half_pixel: roi [1, 5) in pixel centres, bins of 2, samples at 1.5, 2.5 | 3.5, 4.5.
  EXPECT_EQ(r.value()[0].to_f32_vector(), (std::vector<float>{2, 4, 2, 4}));
  auto bad = run_op(OpSpec{"RoiAlign", "", a, 16}, {in(x), in(f32({0, 0, 1, 1}, {1, 4})), in(i64({3}))});
  EXPECT_FALSE(bad.is_ok());
}

}  // namespace
}  // namespace medq
