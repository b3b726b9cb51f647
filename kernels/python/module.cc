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

// Work below this many MACs runs with the GIL held: releasing and re-taking it costs more than
// the kernel for the small layers edge models call often.
constexpr double kReleaseGilMacs = 1 << 16;

std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

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

PyPackedS8 make_packed_s8(const py::object& weight) {
  const char* api = "PackedLinearS8";
  py::array a = as_array<int8_t>(api, "weight", weight, 2, "[N, K]");
  if (a.shape(0) == 0 || a.shape(1) == 0) fail(api, "`weight` must be non-empty, got shape " + shape_str(a));
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
  if (a.shape(0) == 0 || a.shape(1) == 0) fail(api, "`weight` must be non-empty, got shape " + shape_str(a));
  auto w = std::make_shared<PackedF32>(static_cast<const float*>(a.data()),
                                       static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)));
  return {w};
}

int check_threads(const char* api, int threads) {
  if (threads < 1 || threads > 256) fail(api, "`threads` must be in [1, 256], got " + std::to_string(threads));
  return threads;
}

py::array_t<int32_t> py_gemm_s8s8s32(const py::object& a_obj, const py::object& b_obj, int threads) {
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
    fail(api, "`a` must be [M, K] with K = " + std::to_string(b->k()) + ", got shape " + shape_str(a));
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
    fail(api, std::string("`") + name + "` must be an int32 array of shape (" + std::to_string(n) + ",), got None");
  }
  *keep = as_array<int32_t>(api, name, obj, 1, "[N]");
  if (keep->shape(0) != n) {
    fail(api, std::string("`") + name + "` must have shape (" + std::to_string(n) +
                  ",) (one per output channel), got " + shape_str(*keep));
  }
  return static_cast<const int32_t*>(keep->data());
}

py::array_t<int8_t> py_linear_s8(const py::object& x_obj, const PyPackedS8& packed,
                                 const py::object& bias_obj, long input_zero_point,
                                 const py::object& mult_obj, const py::object& shift_obj,
                                 long output_zero_point, std::pair<long, long> clamp, int threads) {
  const char* api = "linear_s8";
  const PackedS8& w = *packed.w;
  py::array x = as_array<int8_t>(api, "x", x_obj, 2, "[M, K]");
  if (x.shape(1) != w.k()) {
    fail(api, "`x` must be [M, K] with K = packed.k = " + std::to_string(w.k()) + ", got shape " +
                  shape_str(x));
  }
  const int n = w.n();
  py::array kb, km, ks;
  QS8Params p;
  p.bias = check_vec_i32(api, "bias", bias_obj, n, true, &kb);
  p.multiplier = check_vec_i32(api, "multiplier", mult_obj, n, false, &km);
  p.shift = check_vec_i32(api, "shift", shift_obj, n, false, &ks);
  for (int j = 0; j < n; ++j) {
    if (p.shift[j] < -31 || p.shift[j] > 30) {
      fail(api, "`shift[" + std::to_string(j) + "]` must be in [-31, 30], got " + std::to_string(p.shift[j]));
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
  if (static_cast<double>(m) * n * w.k() >= kReleaseGilMacs) {
    py::gil_scoped_release nogil;
    linear_s8(m, xp, w.k(), w, p, op, n, threads);
  } else {
    linear_s8(m, xp, w.k(), w, p, op, n, threads);
  }
  return out;
}

py::array_t<float> py_linear_f32(const py::object& x_obj, const PyPackedF32& packed,
                                 const py::object& bias_obj, std::pair<double, double> clamp,
                                 int threads) {
  const char* api = "linear_f32";
  const PackedF32& w = *packed.w;
  py::array x = as_array<float>(api, "x", x_obj, 2, "[M, K]");
  if (x.shape(1) != w.k()) {
    fail(api, "`x` must be [M, K] with K = packed.k = " + std::to_string(w.k()) + ", got shape " +
                  shape_str(x));
  }
  F32Params p;
  py::array kb;
  if (!bias_obj.is_none()) {
    kb = as_array<float>(api, "bias", bias_obj, 1, "[N]");
    if (kb.shape(0) != w.n()) {
      fail(api, "`bias` must have shape (" + std::to_string(w.n()) + ",), got " + shape_str(kb));
    }
    p.bias = static_cast<const float*>(kb.data());
  }
  if (std::isnan(clamp.first) || std::isnan(clamp.second) || clamp.first > clamp.second) {
    fail(api, "`clamp` must be (lo, hi) with lo <= hi, got (" + std::to_string(clamp.first) +
                  ", " + std::to_string(clamp.second) + ")");
  }
  p.min = static_cast<float>(clamp.first);
  p.max = static_cast<float>(clamp.second);
  check_threads(api, threads);
  const int m = static_cast<int>(x.shape(0));
  py::array_t<float> out({static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(w.n())});
  const float* xp = static_cast<const float*>(x.data());
  float* op = out.mutable_data();
  if (static_cast<double>(m) * w.n() * w.k() >= kReleaseGilMacs) {
    py::gil_scoped_release nogil;
    linear_f32(m, xp, w.k(), w, p, op, w.n(), threads);
  } else {
    linear_f32(m, xp, w.k(), w, p, op, w.n(), threads);
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
    fail(api, "unknown path '" + name + "'; expected one of scalar, avx2, avx512vnni, amx, neon, neondot");
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
      .def_property_readonly("shape", [](const PyPackedS8& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def("packed_bytes", [](const PyPackedS8& s, const std::string& path) {
        return s.w->packed_bytes(static_cast<Path>(mask_of("packed_bytes", path)));
      })
      .def("__repr__", [](const PyPackedS8& s) {
        return "PackedLinearS8(n=" + std::to_string(s.w->n()) + ", k=" + std::to_string(s.w->k()) + ")";
      });
  py::class_<PyPackedF32>(m, "PackedLinearF32", "fp32 weight [N, K], packed once.")
      .def(py::init(&make_packed_f32), py::arg("weight"))
      .def_property_readonly("n", [](const PyPackedF32& s) { return s.w->n(); })
      .def_property_readonly("k", [](const PyPackedF32& s) { return s.w->k(); })
      .def_property_readonly("shape", [](const PyPackedF32& s) { return py::make_tuple(s.w->n(), s.w->k()); })
      .def("__repr__", [](const PyPackedF32& s) {
        return "PackedLinearF32(n=" + std::to_string(s.w->n()) + ", k=" + std::to_string(s.w->k()) + ")";
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
  m.def("peak_int8_gops", [](const std::string& path) {
    const uint32_t mask = mask_of("peak_int8_gops", path);
    if (!(available_paths() & mask)) return 0.0;
    py::gil_scoped_release nogil;
    return EDGEOPT_PEAK(static_cast<Path>(mask));
  }, py::arg("path"), "Measured int8 MAC peak of one core on `path`, in GOPS (0 if unavailable).");
}
