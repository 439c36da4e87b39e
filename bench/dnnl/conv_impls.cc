// Lists oneDNN's convolution implementations for resnet50-like shapes and times each one
// (the candidates `medq bench --tune` chooses among, plus Winograd, which needs blocked
// activations). A probe for engine work, not part of the build:
//
//   g++ -O2 -std=c++17 bench/dnnl/conv_impls.cc -ldnnl -o /tmp/conv_impls
//   OMP_NUM_THREADS=2 /tmp/conv_impls [int8|fp32|wino] [batch]
//
// int8 / fp32: nhwc activations (medq's plan), every implementation of convolution_direct.
// wino: fp32 3x3 convolutions, direct vs winograd with the activation format left to oneDNN.
// Times are the best of 10 runs on zero buffers, in ms; "ref" implementations are skipped.
#include <oneapi/dnnl/dnnl.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

double best_ms(primitive& p, std::unordered_map<int, memory>& args, stream& s) {
  p.execute(s, args);
  s.wait();
  double best = 1e30;
  for (int i = 0; i < 10; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    p.execute(s, args);
    s.wait();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

struct Shape {
  int ic, oc, hw, k, stride;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "fp32";
  const int mb = argc > 2 ? std::atoi(argv[2]) : 8;
  const bool q = mode == "int8", wino = mode == "wino";
  engine e(engine::kind::cpu, 0);
  stream s(e);
  std::vector<Shape> shapes = {{64, 64, 56, 3, 1},   {64, 256, 56, 1, 1},  {256, 64, 56, 1, 1},
                               {128, 128, 28, 3, 1}, {512, 128, 28, 1, 1}, {256, 256, 14, 3, 1},
                               {1024, 256, 14, 1, 1}, {512, 512, 7, 3, 1}, {2048, 512, 7, 1, 1}};
  for (const Shape& c : shapes) {
    if (wino && c.k != 3) continue;
    for (algorithm alg : {algorithm::convolution_direct, algorithm::convolution_winograd}) {
      if (alg == algorithm::convolution_winograd && !wino) continue;
      const int pad = c.k / 2, oh = (c.hw + 2 * pad - c.k) / c.stride + 1;
      const tag act = wino ? tag::any : tag::nhwc;
      memory::desc src({mb, c.ic, c.hw, c.hw}, q ? dt::u8 : dt::f32, act);
      memory::desc dst({mb, c.oc, oh, oh}, q ? dt::u8 : dt::f32, act);
      memory::desc wei({c.oc, c.ic, c.k, c.k}, q ? dt::s8 : dt::f32, tag::any);
      memory::desc bias({c.oc}, dt::f32, tag::x);
      convolution_forward::desc d(prop_kind::forward_inference, alg, src, wei, bias, dst, {c.stride, c.stride},
                                  {pad, pad}, {pad, pad});
      primitive_attr a;
      if (q) a.set_output_scales(0, {0.01f});
      post_ops po;
      po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
      a.set_post_ops(po);
      std::printf("%s %s mb%d ic%d oc%d %dx%d k%d:", mode.c_str(),
                  alg == algorithm::convolution_winograd ? "winograd" : "direct", mb, c.ic, c.oc, c.hw, c.hw, c.k);
      convolution_forward::primitive_desc pd;
      try {
        pd = convolution_forward::primitive_desc(d, a, e);
      } catch (const dnnl::error&) {
        std::printf("  (none)\n");
        continue;
      }
      do {
        const std::string name = pd.impl_info_str();
        if (name.rfind("ref", 0) == 0) continue;
        memory ms(pd.src_desc(), e), mw(pd.weights_desc(), e), mbias(pd.bias_desc(), e), md(pd.dst_desc(), e);
        convolution_forward p(pd);
        std::unordered_map<int, memory> args{
            {DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mbias}, {DNNL_ARG_DST, md}};
        std::printf("  %s %.3f", name.c_str(), best_ms(p, args, s));
      } while (pd.next_impl());
      std::printf("\n");
    }
  }
  return 0;
}
