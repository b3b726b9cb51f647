// CONV2D geometry: read and checked once for the fp32 and int8 builders (build.h).
#include <cstdint>

#include "runtime/build.h"

namespace edgeopt {
namespace runtime {

ConvGeometry read_conv_geometry(Build& b, DType dt) {
  b.expect_inputs(1, 1);
  b.expect_outputs(1, 1);
  const Tensor& x = b.activation_in(0, dt);
  b.require(x.shape.size() == 4, "input must be 4-D NHWC, got ", shape_str(x.shape));
  const auto* o = b.op().options_as_Conv2DOptions();
  b.require(o != nullptr, "needs Conv2DOptions");
  ConvGeometry g;
  g.N = static_cast<int>(x.shape[0]);
  g.H = static_cast<int>(x.shape[1]);
  g.W = static_cast<int>(x.shape[2]);
  g.C = static_cast<int>(x.shape[3]);
  const auto k = b.ints(o->kernel(), 2, 1, 1 << 12, "kernel");
  const auto s = b.ints(o->stride(), 2, 1, 1 << 12, "stride");
  const auto d = b.ints(o->dilation(), 2, 1, 1 << 12, "dilation");
  const auto pad = b.ints(o->pad(), 4, 0, 1 << 12, "pad");
  g.KH = k[0], g.KW = k[1], g.SH = s[0], g.SW = s[1], g.DH = d[0], g.DW = d[1];
  g.PT = pad[0], g.PL = pad[1];
  g.G = o->groups();
  b.require(g.G >= 1 && g.C % g.G == 0, "groups = ", g.G, " must divide the ", g.C,
            " input channels");
  const eom::Weight* w = b.op().weight();
  b.require(w != nullptr, "has no weight");
  g.O = w->n();
  b.require(g.O >= 1 && g.O % g.G == 0, "groups = ", g.G, " must divide the ", g.O,
            " output channels");
  g.Cg = g.C / g.G;
  g.Og = g.O / g.G;
  const int64_t kk = static_cast<int64_t>(g.KH) * g.KW * g.Cg;
  b.require(kk <= (1 << 24), "K = ", kk, " is too large");
  g.K = static_cast<int>(kk);
  const int64_t eh = static_cast<int64_t>(g.DH) * (g.KH - 1) + 1;
  const int64_t ew = static_cast<int64_t>(g.DW) * (g.KW - 1) + 1;
  const int64_t ph = g.H + pad[0] + pad[2], pw = g.W + pad[1] + pad[3];
  b.require(ph >= eh && pw >= ew, "the ", eh, "x", ew, " dilated kernel does not fit the padded ",
            ph, "x", pw, " input");
  g.OH = static_cast<int>((ph - eh) / g.SH + 1);
  g.OW = static_cast<int>((pw - ew) / g.SW + 1);
  g.depthwise = g.G == g.C && g.G > 1;
  g.pointwise = g.KH == 1 && g.KW == 1 && g.SH == 1 && g.SW == 1 && pad[0] == 0 && pad[1] == 0 &&
                pad[2] == 0 && pad[3] == 0;
  return g;
}

}  // namespace runtime
}  // namespace edgeopt
