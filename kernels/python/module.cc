// pybind11 skin over the kernels: argument validation and conversion only, no maths.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "edgeopt/gemm.h"
#include "edgeopt/path.h"
#include "edgeopt/sparse.h"

#if defined(__x86_64__) && __has_include("x86/peak_x86.h")
#include "x86/peak_x86.h"
#define EDGEOPT_PEAK(p) ::edgeopt::peak_int8_gops(p)
#elif (defined(__aarch64__) || defined(__arm__)) && __has_include("arm/peak_arm.h")
#include "arm/peak_arm.h"
#define EDGEOPT_PEAK(p) ::edgeopt::peak_int8_gops_arm(p)
#else
#define EDGEOPT_PEAK(p) 0.0
#endif

namespace py = pybind11;
using namespace edgeopt;

namespace {

// Work below this many MACs (a few microseconds on a vector path) runs with the GIL held:
// releasing and re-taking it costs a measurable share of the small calls edge models make often.
constexpr double kReleaseGilMacs = 1 << 22;

std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

std::string dtype_str(const py::array& a) {
  return py::str(a.dtype()).cast<std::string>();
}

[[noreturn]] void fail(const char* api, const std::string& msg) {
  throw py::value_error(std::string(api) + ": " + msg);
}

// Returns `obj` as an array of dtype T with `ndim` dims, C-contiguous, or raises ValueError
// naming the API and the argument.
template <typename T>
py::array as_array(const char* api, const char* name, const py::handle& obj, int ndim,
                   const char* layout) {
  if (!py::isinstance<py::array>(obj)) {
    fail(api, std::string("`") + name + "` must be a numpy array " + layout + ", got " +
                  py::str(py::type::of(obj)).cast<std::string>());
  }
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<T>()) && a.dtype().num() != py::dtype::of<T>().num()) {
    fail(api, std::string("`") + name + "` must have dtype " +
                  py::str(py::dtype::of<T>()).cast<std::string>() + ", got " + dtype_str(a) +
                  ". Convert with .astype() after quantizing; values are never cast silently");
  }
  if (a.ndim() != ndim) {
    fail(api, std::string("`") + name + "` must be " + std::to_string(ndim) + "-D " + layout +
                  ", got shape " + shape_str(a));
  }
  if (!(a.flags() & py::array::c_style)) {
    fail(api, std::string("`") + name + "` must be C-contiguous; pass np.ascontiguousarray(" +
                  name + ")");
  }
  return a;
}

int check_zero_point(const char* api, const char* name, long v) {
  if (v < -128 || v > 127) {
    fail(api, std::string("`") + name + "` must be in [-128, 127] (int8 zero point), got " +
                  std::to_string(v));
  }
  return static_cast<int>(v);
}

struct PyPackedS8 {
  std::shared_ptr<PackedS8> w;
};
struct PyPackedF32 {
  std::shared_ptr<PackedF32> w;
};
struct PyPackedBsrS8 {
  std::shared_ptr<PackedBsrS8> w;
};
struct PyPackedBsrF32 {
  std::shared_ptr<PackedBsrF32> w;
};
struct PyPackedCodebookS8 {
  std::shared_ptr<PackedCodebookS8> w;
};
struct PyPackedCodebookF32 {
  std::shared_ptr<PackedCodebookF32> w;
};

// Any int8 weight format, resolved once per call: its shape and how to run it.
struct S8Weight {
  int n = 0, k = 0;
  const PackedS8* dense = nullptr;
  const PackedBsrS8* bsr = nullptr;
  const PackedCodebookS8* codebook = nullptr;
  void run(int m, const int8_t* a, const QS8Params& p, int8_t* out, int threads) const {
    if (dense)
      linear_s8(m, a, k, *dense, p, out, n, threads);
    else if (bsr)
      linear_s8(m, a, k, *bsr, p, out, n, threads);
    else
      linear_s8(m, a, k, *codebook, p, out, n, threads);
  }
};

S8Weight s8_weight(const char* api, const py::handle& obj) {
  S8Weight w;
  if (py::isinstance<PyPackedS8>(obj)) {
    w.dense = obj.cast<const PyPackedS8&>().w.get();
    w.n = w.dense->n();
    w.k = w.dense->k();
  } else if (py::isinstance<PyPackedBsrS8>(obj)) {
    w.bsr = obj.cast<const PyPackedBsrS8&>().w.get();
    w.n = w.bsr->n();
    w.k = w.bsr->k();
  } else if (py::isinstance<PyPackedCodebookS8>(obj)) {
    w.codebook = obj.cast<const PyPackedCodebookS8&>().w.get();
    w.n = w.codebook->n();
    w.k = w.codebook->k();
  } else {
    fail(api, "`packed` must be a PackedLinearS8, PackedBsrS8 or PackedCodebookS8, got " +
                  py::str(py::type::of(obj)).cast<std::string>() +
                  ". Pack the int8 weight once, outside the call");
  }
  return w;
}

struct F32Weight {
  int n = 0, k = 0;
  const PackedF32* dense = nullptr;
  const PackedBsrF32* bsr = nullptr;
  const PackedCodebookF32* codebook = nullptr;
  void run(int m, const float* a, const F32Params& p, float* out, int threads) const {
    if (dense)
      linear_f32(m, a, k, *dense, p, out, n, threads);
    else if (bsr)
      linear_f32(m, a, k, *bsr, p, out, n, threads);
    else
      linear_f32(m, a, k, *codebook, p, out, n, threads);
  }
};

F32Weight f32_weight(const char* api, const py::handle& obj) {
  F32Weight w;
  if (py::isinstance<PyPackedF32>(obj)) {
    w.dense = obj.cast<const PyPackedF32&>().w.get();
    w.n = w.dense->n();
    w.k = w.dense->k();
  } else if (py::isinstance<PyPackedBsrF32>(obj)) {
    w.bsr = obj.cast<const PyPackedBsrF32&>().w.get();
    w.n = w.bsr->n();
    w.k = w.bsr->k();
  } else if (py::isinstance<PyPackedCodebookF32>(obj)) {
    w.codebook = obj.cast<const PyPackedCodebookF32&>().w.get();
    w.n = w.codebook->n();
    w.k = w.codebook->k();
  } else {
    fail(api, "`packed` must be a PackedLinearF32, PackedBsrF32 or PackedCodebookF32, got " +
                  py::str(py::type::of(obj)).cast<std::string>());
  }
  return w;
}

PyPackedS8 make_packed_s8(const py::object& weight) {
  const char* api = "PackedLinearS8";
  py::array a = as_array<int8_t>(api, "weight", weight, 2, "[N, K]");
  if (a.shape(0) == 0 || a.shape(1) == 0)
    fail(api, "`weight` must be non-empty, got shape " + shape_str(a));
  auto w = std::make_shared<PackedS8>(static_cast<const int8_t*>(a.data()),
                                      static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)));
  // Pack now for the paths this CPU will pick, so the first call pays nothing.
  for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
    if ((available_paths() & bit) && bit != kScalar) w->packed_for(static_cast<Path>(bit));
  }
  return {w};
}

PyPackedF32 make_packed_f32(const py::object& weight) {
  const char* api = "PackedLinearF32";
  py::array a = as_array<float>(api, "weight", weight, 2, "[N, K]");
  if (a.shape(0) == 0 || a.shape(1) == 0)
    fail(api, "`weight` must be non-empty, got shape " + shape_str(a));
  auto w = std::make_shared<PackedF32>(static_cast<const float*>(a.data()),
                                       static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)));
  return {w};
}

std::pair<int, int> check_block(const char* api, const std::pair<long, long>& block) {
  if (block.first < 1 || block.second < 1 || block.first > 256 || block.second > 256) {
    fail(api, "`block` must be (R, C) with 1 <= R, C <= 256, got (" + std::to_string(block.first) +
                  ", " + std::to_string(block.second) + ")");
  }
  return {static_cast<int>(block.first), static_cast<int>(block.second)};
}

// std::invalid_argument from the C++ constructors becomes ValueError with the same text.
template <typename Fn>
auto translate(Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

PyPackedBsrS8 make_bsr_s8(const py::object& weight, std::pair<long, long> block, bool strict) {
  const char* api = "PackedBsrS8";
  py::array a = as_array<int8_t>(api, "weight", weight, 2, "[N, K]");
  const auto rc = check_block(api, block);
  return translate([&] {
    auto w = std::make_shared<PackedBsrS8>(
        static_cast<const int8_t*>(a.data()), static_cast<int>(a.shape(0)),
        static_cast<int>(a.shape(1)), rc.first, rc.second, strict);
    w->packed_for(bsr_path(rc.first, rc.second, true));
    return PyPackedBsrS8{w};
  });
}

PyPackedBsrF32 make_bsr_f32(const py::object& weight, std::pair<long, long> block, bool strict) {
  const char* api = "PackedBsrF32";
  py::array a = as_array<float>(api, "weight", weight, 2, "[N, K]");
  const auto rc = check_block(api, block);
  return translate([&] {
    auto w = std::make_shared<PackedBsrF32>(
        static_cast<const float*>(a.data()), static_cast<int>(a.shape(0)),
        static_cast<int>(a.shape(1)), rc.first, rc.second, strict);
    w->packed_for(bsr_path(rc.first, rc.second, false));
    return PyPackedBsrF32{w};
  });
}

// Validates indices [N, K] uint8 and a table [2^bits] (per layer) or [N, 2^bits] (per channel).
template <typename T>
std::pair<py::array, bool> codebook_args(const char* api, const py::object& indices,
                                         const py::object& table, int bits, py::array* idx_out) {
  *idx_out = as_array<uint8_t>(api, "indices", indices, 2, "[N, K]");
  if (bits < 1 || bits > 8)
    fail(api, "`bits` must be in [1, 8] (4 and 2 have fast kernels), got " + std::to_string(bits));
  const long entries = 1L << bits;
  if (!py::isinstance<py::array>(table)) fail(api, "`table` must be a numpy array");
  py::array t = py::reinterpret_borrow<py::array>(table);
  const bool per_channel = t.ndim() == 2;
  const char* layout = per_channel ? "[N, 2**bits]" : "[2**bits]";
  t = as_array<T>(api, "table", table, per_channel ? 2 : 1, layout);
  const bool ok = per_channel ? (t.shape(0) == idx_out->shape(0) && t.shape(1) == entries)
                              : t.shape(0) == entries;
  if (!ok) {
    fail(api, std::string("`table` must have shape (") + std::to_string(entries) +
                  ",) for one table per layer or (" + std::to_string(idx_out->shape(0)) + ", " +
                  std::to_string(entries) + ") for one per output channel (bits=" +
                  std::to_string(bits) + "), got " + shape_str(t));
  }
  return {t, per_channel};
}

PyPackedCodebookS8 make_cb_s8(const py::object& indices, const py::object& table, int bits) {
  const char* api = "PackedCodebookS8";
  py::array idx;
  auto [t, per_channel] = codebook_args<int8_t>(api, indices, table, bits, &idx);
  return translate([&] {
    auto w = std::make_shared<PackedCodebookS8>(
        static_cast<const uint8_t*>(idx.data()), static_cast<const int8_t*>(t.data()),
        static_cast<int>(idx.shape(0)), static_cast<int>(idx.shape(1)), bits, per_channel);
    w->packed_for(codebook_path(bits, per_channel, true));
    return PyPackedCodebookS8{w};
  });
}

PyPackedCodebookF32 make_cb_f32(const py::object& indices, const py::object& table, int bits) {
  const char* api = "PackedCodebookF32";
  py::array idx;
  auto [t, per_channel] = codebook_args<float>(api, indices, table, bits, &idx);
  return translate([&] {
    auto w = std::make_shared<PackedCodebookF32>(
        static_cast<const uint8_t*>(idx.data()), static_cast<const float*>(t.data()),
        static_cast<int>(idx.shape(0)), static_cast<int>(idx.shape(1)), bits, per_channel);
    w->packed_for(codebook_path(bits, per_channel, false));
    return PyPackedCodebookF32{w};
  });
}

int check_threads(const char* api, int threads) {
  if (threads < 1 || threads > 256)
    fail(api, "`threads` must be in [1, 256], got " + std::to_string(threads));
  return threads;
}

py::array_t<int32_t> py_gemm_s8s8s32(const py::object& a_obj, const py::object& b_obj,
                                     int threads) {
  const char* api = "gemm_s8s8s32";
  check_threads(api, threads);
  py::array a = as_array<int8_t>(api, "a", a_obj, 2, "[M, K]");
  std::shared_ptr<PackedS8> b;
  if (py::isinstance<PyPackedS8>(b_obj)) {
    b = b_obj.cast<const PyPackedS8&>().w;
  } else {
    py::array bb = as_array<int8_t>(api, "b", b_obj, 2, "[N, K]");
    if (bb.shape(1) != a.shape(1)) {
      fail(api, "`b` must be [N, K] with K = a.shape[1] = " + std::to_string(a.shape(1)) +
                    ", got shape " + shape_str(bb));
    }
    b = std::make_shared<PackedS8>(static_cast<const int8_t*>(bb.data()),
                                   static_cast<int>(bb.shape(0)), static_cast<int>(bb.shape(1)));
  }
  if (a.shape(1) != b->k()) {
    fail(api,
         "`a` must be [M, K] with K = " + std::to_string(b->k()) + ", got shape " + shape_str(a));
  }
  const int m = static_cast<int>(a.shape(0));
  py::array_t<int32_t> c({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(b->n())});
  const int8_t* ap = static_cast<const int8_t*>(a.data());
  int32_t* cp = c.mutable_data();
  if (static_cast<double>(m) * b->n() * b->k() >= kReleaseGilMacs) {
    py::gil_scoped_release nogil;
    gemm_s8s8s32(m, ap, b->k(), *b, cp, b->n(), threads);
  } else {
    gemm_s8s8s32(m, ap, b->k(), *b, cp, b->n(), threads);
  }
  return c;
}

const int32_t* check_vec_i32(const char* api, const char* name, const py::handle& obj, int n,
                             bool allow_none, py::array* keep) {
  if (obj.is_none()) {
    if (allow_none) return nullptr;
    fail(api, std::string("`") + name + "` must be an int32 array of shape (" + std::to_string(n) +
                  ",), got None");
  }
  *keep = as_array<int32_t>(api, name, obj, 1, "[N]");
  if (keep->shape(0) != n) {
    fail(api, std::string("`") + name + "` must have shape (" + std::to_string(n) +
                  ",) (one per output channel), got " + shape_str(*keep));
  }
  return static_cast<const int32_t*>(keep->data());
}

py::array_t<int8_t> py_linear_s8(const py::object& x_obj, const py::object& packed,
                                 const py::object& bias_obj, long input_zero_point,
                                 const py::object& mult_obj, const py::object& shift_obj,
                                 long output_zero_point, std::pair<long, long> clamp, int threads) {
  const char* api = "linear_s8";
  const S8Weight w = s8_weight(api, packed);
  py::array x = as_array<int8_t>(api, "x", x_obj, 2, "[M, K]");
  if (x.shape(1) != w.k) {
    fail(api, "`x` must be [M, K] with K = packed.k = " + std::to_string(w.k) + ", got shape " +
                  shape_str(x));
  }
  const int n = w.n;
  py::array kb, km, ks;
  QS8Params p;
  p.bias = check_vec_i32(api, "bias", bias_obj, n, true, &kb);
  p.multiplier = check_vec_i32(api, "multiplier", mult_obj, n, false, &km);
  p.shift = check_vec_i32(api, "shift", shift_obj, n, false, &ks);
  for (int j = 0; j < n; ++j) {
    if (p.shift[j] < -31 || p.shift[j] > 30) {
      fail(api, "`shift[" + std::to_string(j) + "]` must be in [-31, 30], got " +
                    std::to_string(p.shift[j]));
    }
  }
  p.input_zero_point = check_zero_point(api, "input_zero_point", input_zero_point);
  p.output_zero_point = check_zero_point(api, "output_zero_point", output_zero_point);
  if (clamp.first < -128 || clamp.second > 127 || clamp.first > clamp.second) {
    fail(api, "`clamp` must be (lo, hi) with -128 <= lo <= hi <= 127, got (" +
                  std::to_string(clamp.first) + ", " + std::to_string(clamp.second) + ")");
  }
  p.qmin = static_cast<int32_t>(clamp.first);
  p.qmax = static_cast<int32_t>(clamp.second);
  check_threads(api, threads);
  const int m = static_cast<int>(x.shape(0));
  py::array_t<int8_t> out({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(n)});
  const int8_t* xp = static_cast<const int8_t*>(x.data());
  int8_t* op = out.mutable_data();
  if (static_cast<double>(m) * n * w.k >= kReleaseGilMacs) {
    py::gil_scoped_release nogil;
    w.run(m, xp, p, op, threads);
  } else {
    w.run(m, xp, p, op, threads);
  }
  return out;
}

py::array_t<float> py_linear_f32(const py::object& x_obj, const py::object& packed,
                                 const py::object& bias_obj, std::pair<double, double> clamp,
                                 int threads) {
  const char* api = "linear_f32";
  const F32Weight w = f32_weight(api, packed);
  py::array x = as_array<float>(api, "x", x_obj, 2, "[M, K]");
  if (x.shape(1) != w.k) {
    fail(api, "`x` must be [M, K] with K = packed.k = " + std::to_string(w.k) + ", got shape " +
                  shape_str(x));
  }
  F32Params p;
  py::array kb;
  if (!bias_obj.is_none()) {
    kb = as_array<float>(api, "bias", bias_obj, 1, "[N]");
    if (kb.shape(0) != w.n) {
      fail(api, "`bias` must have shape (" + std::to_string(w.n) + ",), got " + shape_str(kb));
    }
    p.bias = static_cast<const float*>(kb.data());
  }
  if (std::isnan(clamp.first) || std::isnan(clamp.second) || clamp.first > clamp.second) {
    fail(api, "`clamp` must be (lo, hi) with lo <= hi, got (" + std::to_string(clamp.first) + ", " +
                  std::to_string(clamp.second) + ")");
  }
  p.min = static_cast<float>(clamp.first);
  p.max = static_cast<float>(clamp.second);
  check_threads(api, threads);
  const int m = static_cast<int>(x.shape(0));
  py::array_t<float> out({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(w.n)});
  const float* xp = static_cast<const float*>(x.data());
  float* op = out.mutable_data();
  if (static_cast<double>(m) * w.n * w.k >= kReleaseGilMacs) {
    py::gil_scoped_release nogil;
    w.run(m, xp, p, op, threads);
  } else {
    w.run(m, xp, p, op, threads);
  }
  return out;
}

std::vector<std::string> names(uint32_t mask) {
  std::vector<std::string> out;
  for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
    if (mask & bit) out.emplace_back(path_name(static_cast<Path>(bit)));
  }
  return out;
}

uint32_t mask_of(const char* api, const std::string& name) {
  const uint32_t m = parse_paths(name);
  if (m == 0) {
    fail(api, "unknown path '" + name +
                  "'; expected one of scalar, avx2, avx512vnni, amx, neon, neondot");
  }
  return m;
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "edge-optimizer native kernels (dense int8 / fp32 GEMM); use optimizer.kernels.";
  py::class_<PyPackedS8>(m, "PackedLinearS8",
                         "int8 weight [N, K] (symmetric, per output channel), packed once.")
      .def(py::init(&make_packed_s8), py::arg("weight"))
      .def_property_readonly("n", [](const PyPackedS8& s) { return s.w->n(); })
      .def_property_readonly("k", [](const PyPackedS8& s) { return s.w->k(); })
      .def_property_readonly("shape",
                             [](const PyPackedS8& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def_property_readonly("nbytes",
                             [](const PyPackedS8& s) {
                               uint32_t best = kScalar;
                               for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
                                 if ((available_paths() & bit) && bit != kAmxInt8) best = bit;
                               }
                               return s.w->packed_bytes(static_cast<Path>(best));
                             })
      .def("packed_bytes",
           [](const PyPackedS8& s, const std::string& path) {
             return s.w->packed_bytes(static_cast<Path>(mask_of("packed_bytes", path)));
           })
      .def("__repr__", [](const PyPackedS8& s) {
        return "PackedLinearS8(n=" + std::to_string(s.w->n()) + ", k=" + std::to_string(s.w->k()) +
               ")";
      });
  py::class_<PyPackedF32>(m, "PackedLinearF32", "fp32 weight [N, K], packed once.")
      .def(py::init(&make_packed_f32), py::arg("weight"))
      .def_property_readonly("n", [](const PyPackedF32& s) { return s.w->n(); })
      .def_property_readonly("k", [](const PyPackedF32& s) { return s.w->k(); })
      .def_property_readonly(
          "shape", [](const PyPackedF32& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def("__repr__", [](const PyPackedF32& s) {
        return "PackedLinearF32(n=" + std::to_string(s.w->n()) + ", k=" + std::to_string(s.w->k()) +
               ")";
      });
  py::class_<PyPackedBsrS8>(
      m, "PackedBsrS8",
      "Block-sparse int8 weight [N, K] in R x C blocks (only non-zero blocks stored).")
      .def(py::init(&make_bsr_s8), py::arg("weight"), py::arg("block"), py::arg("strict") = true)
      .def_property_readonly("n", [](const PyPackedBsrS8& s) { return s.w->n(); })
      .def_property_readonly("k", [](const PyPackedBsrS8& s) { return s.w->k(); })
      .def_property_readonly(
          "shape", [](const PyPackedBsrS8& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def_property_readonly(
          "block", [](const PyPackedBsrS8& s) { return py::make_tuple(s.w->r(), s.w->c()); })
      .def_property_readonly("nnz_blocks", [](const PyPackedBsrS8& s) { return s.w->nnz_blocks(); })
      .def_property_readonly("density", [](const PyPackedBsrS8& s) { return s.w->density(); })
      .def_property_readonly("path",
                             [](const PyPackedBsrS8& s) {
                               return std::string(path_name(bsr_path(s.w->r(), s.w->c(), true)));
                             })
      .def_property_readonly("nbytes",
                             [](const PyPackedBsrS8& s) {
                               return s.w->packed_bytes(bsr_path(s.w->r(), s.w->c(), true));
                             })
      .def("__repr__", [](const PyPackedBsrS8& s) {
        return "PackedBsrS8(n=" + std::to_string(s.w->n()) + ", k=" + std::to_string(s.w->k()) +
               ", block=(" + std::to_string(s.w->r()) + ", " + std::to_string(s.w->c()) +
               "), nnz_blocks=" + std::to_string(s.w->nnz_blocks()) + ")";
      });
  py::class_<PyPackedBsrF32>(m, "PackedBsrF32", "Block-sparse fp32 weight [N, K] in R x C blocks.")
      .def(py::init(&make_bsr_f32), py::arg("weight"), py::arg("block"), py::arg("strict") = true)
      .def_property_readonly("n", [](const PyPackedBsrF32& s) { return s.w->n(); })
      .def_property_readonly("k", [](const PyPackedBsrF32& s) { return s.w->k(); })
      .def_property_readonly(
          "shape", [](const PyPackedBsrF32& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def_property_readonly(
          "block", [](const PyPackedBsrF32& s) { return py::make_tuple(s.w->r(), s.w->c()); })
      .def_property_readonly("nnz_blocks",
                             [](const PyPackedBsrF32& s) { return s.w->nnz_blocks(); })
      .def_property_readonly("density", [](const PyPackedBsrF32& s) { return s.w->density(); })
      .def_property_readonly("path",
                             [](const PyPackedBsrF32& s) {
                               return std::string(path_name(bsr_path(s.w->r(), s.w->c(), false)));
                             })
      .def_property_readonly("nbytes", [](const PyPackedBsrF32& s) {
        return s.w->packed_bytes(bsr_path(s.w->r(), s.w->c(), false));
      });
  py::class_<PyPackedCodebookS8>(m, "PackedCodebookS8",
                                 "int8 weight as `bits`-bit indices [N, K] into a table per layer "
                                 "[2**bits] or per channel [N, 2**bits].")
      .def(py::init(&make_cb_s8), py::arg("indices"), py::arg("table"), py::arg("bits") = 4)
      .def_property_readonly("n", [](const PyPackedCodebookS8& s) { return s.w->n(); })
      .def_property_readonly("k", [](const PyPackedCodebookS8& s) { return s.w->k(); })
      .def_property_readonly(
          "shape", [](const PyPackedCodebookS8& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def_property_readonly("bits", [](const PyPackedCodebookS8& s) { return s.w->bits(); })
      .def_property_readonly("per_channel",
                             [](const PyPackedCodebookS8& s) { return s.w->per_channel(); })
      .def_property_readonly(
          "path",
          [](const PyPackedCodebookS8& s) {
            return std::string(path_name(codebook_path(s.w->bits(), s.w->per_channel(), true)));
          })
      .def_property_readonly("nbytes", [](const PyPackedCodebookS8& s) {
        return s.w->packed_bytes(codebook_path(s.w->bits(), s.w->per_channel(), true));
      });
  py::class_<PyPackedCodebookF32>(
      m, "PackedCodebookF32",
      "fp32 weight as `bits`-bit indices [N, K] into a float table per layer or per channel.")
      .def(py::init(&make_cb_f32), py::arg("indices"), py::arg("table"), py::arg("bits") = 4)
      .def_property_readonly("n", [](const PyPackedCodebookF32& s) { return s.w->n(); })
      .def_property_readonly("k", [](const PyPackedCodebookF32& s) { return s.w->k(); })
      .def_property_readonly(
          "shape", [](const PyPackedCodebookF32& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def_property_readonly("bits", [](const PyPackedCodebookF32& s) { return s.w->bits(); })
      .def_property_readonly("per_channel",
                             [](const PyPackedCodebookF32& s) { return s.w->per_channel(); })
      .def_property_readonly(
          "path",
          [](const PyPackedCodebookF32& s) {
            return std::string(path_name(codebook_path(s.w->bits(), s.w->per_channel(), false)));
          })
      .def_property_readonly("nbytes", [](const PyPackedCodebookF32& s) {
        return s.w->packed_bytes(codebook_path(s.w->bits(), s.w->per_channel(), false));
      });
  m.def("gemm_s8s8s32", &py_gemm_s8s8s32, py::arg("a"), py::arg("b"), py::arg("threads") = 1,
        "C_s32[M,N] = a_s8[M,K] . b_s8[N,K]^T, exact. b: int8 array or PackedLinearS8.");
  m.def("linear_s8", &py_linear_s8, py::arg("x"), py::arg("packed"), py::arg("bias"),
        py::arg("input_zero_point"), py::arg("multiplier"), py::arg("shift"),
        py::arg("output_zero_point"), py::arg("clamp") = std::make_pair(-128L, 127L),
        py::arg("threads") = 1, "Fused int8 linear (TFLite int8 spec requantization).");
  m.def("linear_f32", &py_linear_f32, py::arg("x"), py::arg("packed"), py::arg("bias") = py::none(),
        py::arg("clamp") = std::make_pair(-std::numeric_limits<double>::infinity(),
                                          std::numeric_limits<double>::infinity()),
        py::arg("threads") = 1, "fp32 linear with bias and clamp.");
  m.def("available_paths", [] { return names(available_paths()); });
  m.def("compiled_paths", [] { return names(compiled_paths()); });
  m.def("cpu_paths", [] { return names(cpu_paths()); });
  m.def("cpu_description", &cpu_description);
  m.def("last_path", [] { return std::string(path_name(last_path())); });
  m.def("_forced_paths", [] { return names(forced_paths()); });
  m.def("_force_paths", [](const std::vector<std::string>& ns) {
    uint32_t mask = 0;
    for (const auto& n : ns) mask |= mask_of("force_path", n);
    force_paths(mask);
  });
  m.def(
      "peak_int8_gops",
      [](const std::string& path) {
        const uint32_t mask = mask_of("peak_int8_gops", path);
        if (!(available_paths() & mask)) return 0.0;
        py::gil_scoped_release nogil;
        return EDGEOPT_PEAK(static_cast<Path>(mask));
      },
      py::arg("path"), "Measured int8 MAC peak of one core on `path`, in GOPS (0 if unavailable).");
}
