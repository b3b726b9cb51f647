// pybind11 skin over the kernels: argument validation and conversion only, no maths.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
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

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// Runs `fn` with the GIL released when the call is large enough to be worth it.
template <typename Fn>
void run_kernel(double macs, Fn fn) {
  if (macs >= kReleaseGilMacs) {
    py::gil_scoped_release nogil;
    fn();
  } else {
    fn();
  }
}

// numpy's byte-order mark of a dtype stored the other way round from this CPU.
constexpr char kForeignByteOrder = PY_BIG_ENDIAN ? '<' : '>';

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
  const char byteorder = py::detail::array_descriptor_proxy(a.dtype().ptr())->byteorder;
  if (a.dtype().num() != py::dtype::of<T>().num() || byteorder == kForeignByteOrder) {
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

// ---- Per-call entry points ---------------------------------------------------------------------
// linear_s8, linear_f32 and gemm_s8s8s32 are raw CPython functions (METH_FASTCALL |
// METH_KEYWORDS), not pybind11 overloads: pybind11's dispatcher (overload resolution, a type
// caster per argument, keyword matching, temporary dtype objects) costs about 1 us a call, as much
// as the maths of a small layer or a 95 %-sparse one. They parse their arguments by hand, check
// arrays through numpy's struct fields and build the output with one numpy call. Error paths
// reuse the pybind11 helpers above, so their messages do not change.

// numpy's array type, its allocator and the dtypes of the outputs, looked up once at import.
struct NumpyFast {
  PyTypeObject* array_type = nullptr;
  decltype(py::detail::npy_api::PyArray_NewFromDescr_) new_from_descr = nullptr;
  PyObject* descr_i8 = nullptr;
  PyObject* descr_i32 = nullptr;
  PyObject* descr_f32 = nullptr;
};
NumpyFast g_np;

// The packed weight classes, so that one pointer comparison identifies an argument's type.
PyTypeObject* g_type_s8 = nullptr;
PyTypeObject* g_type_f32 = nullptr;
PyTypeObject* g_type_bsr_s8 = nullptr;
PyTypeObject* g_type_bsr_f32 = nullptr;
PyTypeObject* g_type_cb_s8 = nullptr;
PyTypeObject* g_type_cb_f32 = nullptr;

using npy = py::detail::npy_api;

std::string type_name(PyObject* obj) {
  return Py_TYPE(obj)->tp_name;
}

// "<class 'module.Name'>", as the messages of the packed-weight checks have always said.
std::string class_str(PyObject* obj) {
  return py::str(py::type::of(py::handle(obj))).cast<std::string>();
}

std::string shape_str(PyObject* obj) {
  return shape_str(py::reinterpret_borrow<py::array>(obj));
}

// The C++ object inside a pybind11 instance of exactly type `type` (nullptr when it is another
// type, a subclass, or was never initialised): no registry lookup on the common path.
template <typename T>
const T* fast_value(PyObject* obj, PyTypeObject* type) {
  if (Py_TYPE(obj) != type) return nullptr;
  auto* inst = reinterpret_cast<py::detail::instance*>(obj);
  if (!inst->simple_layout || !inst->simple_holder_constructed) return nullptr;
  return static_cast<const T*>(inst->simple_value_holder[0]);
}

// Same as fast_value, then a lookup for subclasses; nullptr when `obj` is not a `type`. An
// instance whose __init__ never ran (cls.__new__(cls)) raises TypeError instead of crashing.
template <typename T>
const T* packed_value(const char* api, PyObject* obj, PyTypeObject* type) {
  if (const T* v = fast_value<T>(obj, type)) return v;
  if (!PyObject_TypeCheck(obj, type)) return nullptr;
  auto* inst = reinterpret_cast<py::detail::instance*>(obj);
  const auto vh = inst->get_value_and_holder(py::detail::get_type_info(typeid(T)), false);
  if (!vh.inst || !vh.holder_constructed() || !vh.value_ptr()) {
    throw py::type_error(std::string(api) + ": `packed` is an uninitialised " + type->tp_name +
                         " (its __init__ never ran)");
  }
  return vh.template value_ptr<T>();
}

S8Weight s8_weight(const char* api, PyObject* obj) {
  S8Weight w;
  if (const auto* d = packed_value<PyPackedS8>(api, obj, g_type_s8)) {
    w.dense = d->w.get();
    w.n = w.dense->n();
    w.k = w.dense->k();
  } else if (const auto* b = packed_value<PyPackedBsrS8>(api, obj, g_type_bsr_s8)) {
    w.bsr = b->w.get();
    w.n = w.bsr->n();
    w.k = w.bsr->k();
  } else if (const auto* c = packed_value<PyPackedCodebookS8>(api, obj, g_type_cb_s8)) {
    w.codebook = c->w.get();
    w.n = w.codebook->n();
    w.k = w.codebook->k();
  } else {
    fail(api, "`packed` must be a PackedLinearS8, PackedBsrS8 or PackedCodebookS8, got " +
                  class_str(obj) + ". Pack the int8 weight once, outside the call");
  }
  return w;
}

F32Weight f32_weight(const char* api, PyObject* obj) {
  F32Weight w;
  if (const auto* d = packed_value<PyPackedF32>(api, obj, g_type_f32)) {
    w.dense = d->w.get();
    w.n = w.dense->n();
    w.k = w.dense->k();
  } else if (const auto* b = packed_value<PyPackedBsrF32>(api, obj, g_type_bsr_f32)) {
    w.bsr = b->w.get();
    w.n = w.bsr->n();
    w.k = w.bsr->k();
  } else if (const auto* c = packed_value<PyPackedCodebookF32>(api, obj, g_type_cb_f32)) {
    w.codebook = c->w.get();
    w.n = w.codebook->n();
    w.k = w.codebook->k();
  } else {
    fail(api, "`packed` must be a PackedLinearF32, PackedBsrF32 or PackedCodebookF32, got " +
                  class_str(obj));
  }
  return w;
}

// `obj` as a C-contiguous array of dtype T (numpy number `type_num`) with `ndim` dims; otherwise
// as_array raises the precise ValueError.
template <typename T>
const py::detail::PyArray_Proxy* fast_array(const char* api, const char* name, PyObject* obj,
                                            int ndim, const char* layout, int type_num) {
  if (PyObject_TypeCheck(obj, g_np.array_type)) {
    const auto* a = py::detail::array_proxy(obj);
    const auto* d = py::detail::array_descriptor_proxy(a->descr);
    if (d->type_num == type_num && d->byteorder != kForeignByteOrder && a->nd == ndim &&
        (a->flags & npy::NPY_ARRAY_C_CONTIGUOUS_)) {
      return a;
    }
  }
  as_array<T>(api, name, obj, ndim, layout);  // raises: it checks the same things
  fail(api, std::string("`") + name + "` must be a C-contiguous numpy array " + layout);
}

// A per-output-channel int32 vector of shape (n,); None gives nullptr where allowed.
const int32_t* vec_i32(const char* api, const char* name, PyObject* obj, int n, bool allow_none) {
  if (obj == Py_None) {
    if (allow_none) return nullptr;
    fail(api, std::string("`") + name + "` must be an int32 array of shape (" + std::to_string(n) +
                  ",), got None");
  }
  const auto* a = fast_array<int32_t>(api, name, obj, 1, "[N]", npy::NPY_INT32_);
  if (a->dimensions[0] != n) {
    fail(api, std::string("`") + name + "` must have shape (" + std::to_string(n) +
                  ",) (one per output channel), got " + shape_str(obj));
  }
  return reinterpret_cast<const int32_t*>(a->data);
}

// Whether every shift is in [-31, 30], in one pass with no branch per element (a 1024-channel
// layer checks in ~30 ns). SSE2: saturating packs bring 16 shifts into one byte vector (a value out
// of range stays out of range), then one add and one unsigned max per 16 shifts.
bool shifts_in_range(const int32_t* shift, int n) {
  int j = 0;
  uint32_t worst = 0;
#if defined(__SSE2__)
  const __m128i plus31 = _mm_set1_epi8(31);
  __m128i worst16 = _mm_setzero_si128();
  for (; j + 16 <= n; j += 16) {
    const auto* v = reinterpret_cast<const __m128i*>(shift + j);
    const __m128i lo = _mm_packs_epi32(_mm_loadu_si128(v), _mm_loadu_si128(v + 1));
    const __m128i hi = _mm_packs_epi32(_mm_loadu_si128(v + 2), _mm_loadu_si128(v + 3));
    worst16 = _mm_max_epu8(worst16, _mm_add_epi8(_mm_packs_epi16(lo, hi), plus31));
  }
  const __m128i limit = _mm_set1_epi8(61);
  if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(worst16, limit), limit)) != 0xFFFF)
    return false;
#endif
  for (; j < n; ++j) worst = std::max(worst, static_cast<uint32_t>(shift[j]) + 31u);
  return worst <= 61u;
}

void check_shifts(const char* api, const int32_t* shift, int n) {
  if (shifts_in_range(shift, n)) return;
  for (int j = 0; j < n; ++j) {
    if (shift[j] < -31 || shift[j] > 30) {
      fail(api, "`shift[" + std::to_string(j) + "]` must be in [-31, 30], got " +
                    std::to_string(shift[j]));
    }
  }
}

// An int argument (int, bool, numpy integer: anything with __index__, never a float), saturated
// to the range of long so the range checks that follow reject huge values.
long to_long(const char* api, const char* name, PyObject* obj) {
  py::object index;
  if (!PyLong_Check(obj)) {
    index = py::reinterpret_steal<py::object>(PyNumber_Index(obj));
    if (!index) {
      PyErr_Clear();
      throw py::type_error(std::string(api) + ": `" + name + "` must be an int, got " +
                           type_name(obj));
    }
    obj = index.ptr();
  }
  int overflow = 0;
  const long v = PyLong_AsLongAndOverflow(obj, &overflow);
  if (overflow)
    return overflow > 0 ? std::numeric_limits<long>::max() : std::numeric_limits<long>::min();
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

double to_double(const char* api, const char* name, PyObject* obj) {
  if (PyFloat_CheckExact(obj)) return PyFloat_AS_DOUBLE(obj);
  const double v = PyFloat_AsDouble(obj);
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error(std::string(api) + ": `" + name + "` must be a float, got " +
                         type_name(obj));
  }
  return v;
}

// The two items of `clamp`: a tuple, a list or any other sequence of length 2.
std::pair<PyObject*, PyObject*> pair_items(const char* api, PyObject* obj, py::object* keep) {
  if (!PyTuple_Check(obj) && !PyList_Check(obj)) {
    if (!PySequence_Check(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj)) {
      throw py::type_error(std::string(api) + ": `clamp` must be a (lo, hi) tuple, got " +
                           type_name(obj));
    }
    *keep = py::reinterpret_steal<py::object>(PySequence_Tuple(obj));
    if (!*keep) throw py::error_already_set();
    obj = keep->ptr();
  }
  if (PySequence_Fast_GET_SIZE(obj) != 2) {
    throw py::type_error(std::string(api) + ": `clamp` must be a (lo, hi) pair, got " +
                         py::repr(obj).cast<std::string>());
  }
  return {PySequence_Fast_GET_ITEM(obj, 0), PySequence_Fast_GET_ITEM(obj, 1)};
}

std::string str_of(PyObject* obj) {
  return py::str(obj).cast<std::string>();
}

void check_zero_point(const char* api, const char* name, long v, PyObject* obj) {
  if (v < -128 || v > 127) {
    fail(api, std::string("`") + name + "` must be in [-128, 127] (int8 zero point), got " +
                  str_of(obj));
  }
}

void check_threads(const char* api, long threads, PyObject* obj) {
  if (threads < 1 || threads > 256) fail(api, "`threads` must be in [1, 256], got " + str_of(obj));
}

// A new C-contiguous [m, n] array of the dtype `descr`.
py::object new_matrix(PyObject* descr, Py_ssize_t m, Py_ssize_t n) {
  Py_intptr_t dims[2] = {m, n};
  Py_INCREF(descr);  // PyArray_NewFromDescr steals it
  auto out = py::reinterpret_steal<py::object>(
      g_np.new_from_descr(g_np.array_type, descr, 2, dims, nullptr, nullptr, 0, nullptr));
  if (!out) throw py::error_already_set();
  return out;
}

template <typename T>
T* matrix_data(const py::object& a) {
  return reinterpret_cast<T*>(py::detail::array_proxy(a.ptr())->data);
}

// The arguments of one function, matched CPython-style: positional first, then keywords.
struct Signature {
  const char* fname;
  int nparams;
  int nrequired;
  const char* names[9];
  PyObject* interned[9];  // filled at import; keyword names are compared by pointer first
};

bool parse_args(const Signature& sig, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                PyObject** out) {
  if (nargs > sig.nparams) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", sig.fname,
                 sig.nparams, nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0));
    return false;
  }
  for (int i = 0; i < sig.nparams; ++i) out[i] = i < nargs ? args[i] : nullptr;
  if (kwnames) {
    const Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t j = 0; j < nkw; ++j) {
      PyObject* key = PyTuple_GET_ITEM(kwnames, j);
      int idx = -1;
      for (int i = 0; i < sig.nparams && idx < 0; ++i) {
        if (key == sig.interned[i]) idx = i;
      }
      for (int i = 0; i < sig.nparams && idx < 0; ++i) {
        if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, sig.names[i]) == 0)
          idx = i;
      }
      if (idx < 0) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", sig.fname,
                     key);
        return false;
      }
      if (out[idx]) {
        PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", sig.fname,
                     sig.names[idx]);
        return false;
      }
      out[idx] = args[nargs + j];
    }
  }
  for (int i = 0; i < sig.nrequired; ++i) {
    if (!out[i]) {
      PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)", sig.fname,
                   sig.names[i], i + 1);
      return false;
    }
  }
  return true;
}

Signature g_sig_linear_s8 = {"linear_s8",
                             9,
                             7,
                             {"x", "packed", "bias", "input_zero_point", "multiplier", "shift",
                              "output_zero_point", "clamp", "threads"},
                             {}};
Signature g_sig_linear_f32 = {"linear_f32", 5, 2, {"x", "packed", "bias", "clamp", "threads"}, {}};
Signature g_sig_gemm = {"gemm_s8s8s32", 3, 2, {"a", "b", "threads"}, {}};

// Sets the Python error for the C++ exception being handled (pybind11's translators: ValueError
// for py::value_error and std::invalid_argument, and so on).
void set_python_error() {
  try {
    throw;
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (py::builtin_exception& e) {
    e.set_error();
  } catch (...) {
    py::detail::try_translate_exceptions();
  }
  if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception");
}

PyObject* py_linear_s8(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[9];
  if (!parse_args(g_sig_linear_s8, args, nargs, kwnames, a)) return nullptr;
  try {
    const char* api = "linear_s8";
    const long izp = to_long(api, "input_zero_point", a[3]);
    const long ozp = to_long(api, "output_zero_point", a[6]);
    long lo = -128, hi = 127;
    if (a[7]) {
      py::object keep;
      const auto items = pair_items(api, a[7], &keep);
      lo = to_long(api, "clamp", items.first);
      hi = to_long(api, "clamp", items.second);
      if (lo < -128 || hi > 127 || lo > hi) {
        fail(api, "`clamp` must be (lo, hi) with -128 <= lo <= hi <= 127, got (" +
                      str_of(items.first) + ", " + str_of(items.second) + ")");
      }
    }
    const long threads = a[8] ? to_long(api, "threads", a[8]) : 1;

    const S8Weight w = s8_weight(api, a[1]);
    const auto* x = fast_array<int8_t>(api, "x", a[0], 2, "[M, K]", npy::NPY_INT8_);
    if (x->dimensions[1] != w.k) {
      fail(api, "`x` must be [M, K] with K = packed.k = " + std::to_string(w.k) + ", got shape " +
                    shape_str(a[0]));
    }
    const int n = w.n;
    QS8Params p;
    p.bias = vec_i32(api, "bias", a[2], n, true);
    p.multiplier = vec_i32(api, "multiplier", a[4], n, false);
    p.shift = vec_i32(api, "shift", a[5], n, false);
    check_shifts(api, p.shift, n);
    check_zero_point(api, "input_zero_point", izp, a[3]);
    check_zero_point(api, "output_zero_point", ozp, a[6]);
    p.input_zero_point = static_cast<int32_t>(izp);
    p.output_zero_point = static_cast<int32_t>(ozp);
    p.qmin = static_cast<int32_t>(lo);
    p.qmax = static_cast<int32_t>(hi);
    check_threads(api, threads, a[8]);

    const int m = static_cast<int>(x->dimensions[0]);
    py::object out = new_matrix(g_np.descr_i8, m, n);
    const int8_t* xp = reinterpret_cast<const int8_t*>(x->data);
    int8_t* op = matrix_data<int8_t>(out);
    run_kernel(static_cast<double>(m) * n * w.k,
               [&] { w.run(m, xp, p, op, static_cast<int>(threads)); });
    return out.release().ptr();
  } catch (...) {
    set_python_error();
    return nullptr;
  }
}

PyObject* py_linear_f32(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[5];
  if (!parse_args(g_sig_linear_f32, args, nargs, kwnames, a)) return nullptr;
  try {
    const char* api = "linear_f32";
    double lo = -std::numeric_limits<double>::infinity();
    double hi = std::numeric_limits<double>::infinity();
    if (a[3]) {
      py::object keep;
      const auto items = pair_items(api, a[3], &keep);
      lo = to_double(api, "clamp", items.first);
      hi = to_double(api, "clamp", items.second);
    }
    const long threads = a[4] ? to_long(api, "threads", a[4]) : 1;

    const F32Weight w = f32_weight(api, a[1]);
    const auto* x = fast_array<float>(api, "x", a[0], 2, "[M, K]", npy::NPY_FLOAT32_);
    if (x->dimensions[1] != w.k) {
      fail(api, "`x` must be [M, K] with K = packed.k = " + std::to_string(w.k) + ", got shape " +
                    shape_str(a[0]));
    }
    F32Params p;
    if (a[2] && a[2] != Py_None) {
      const auto* b = fast_array<float>(api, "bias", a[2], 1, "[N]", npy::NPY_FLOAT32_);
      if (b->dimensions[0] != w.n) {
        fail(api, "`bias` must have shape (" + std::to_string(w.n) + ",), got " + shape_str(a[2]));
      }
      p.bias = reinterpret_cast<const float*>(b->data);
    }
    if (std::isnan(lo) || std::isnan(hi) || lo > hi) {
      fail(api, "`clamp` must be (lo, hi) with lo <= hi, got (" + std::to_string(lo) + ", " +
                    std::to_string(hi) + ")");
    }
    p.min = static_cast<float>(lo);
    p.max = static_cast<float>(hi);
    check_threads(api, threads, a[4]);

    const int m = static_cast<int>(x->dimensions[0]);
    py::object out = new_matrix(g_np.descr_f32, m, w.n);
    const float* xp = reinterpret_cast<const float*>(x->data);
    float* op = matrix_data<float>(out);
    run_kernel(static_cast<double>(m) * w.n * w.k,
               [&] { w.run(m, xp, p, op, static_cast<int>(threads)); });
    return out.release().ptr();
  } catch (...) {
    set_python_error();
    return nullptr;
  }
}

PyObject* py_gemm_s8s8s32(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* arg[3];
  if (!parse_args(g_sig_gemm, args, nargs, kwnames, arg)) return nullptr;
  try {
    const char* api = "gemm_s8s8s32";
    const long threads = arg[2] ? to_long(api, "threads", arg[2]) : 1;
    check_threads(api, threads, arg[2]);
    const auto* a = fast_array<int8_t>(api, "a", arg[0], 2, "[M, K]", npy::NPY_INT8_);
    const Py_ssize_t ka = a->dimensions[1];
    std::shared_ptr<PackedS8> owned;  // a raw int8 `b`, packed for this call only
    const PackedS8* b = nullptr;
    if (const auto* pb = packed_value<PyPackedS8>(api, arg[1], g_type_s8)) {
      b = pb->w.get();
    } else {
      const auto* bb = fast_array<int8_t>(api, "b", arg[1], 2, "[N, K]", npy::NPY_INT8_);
      if (bb->dimensions[1] != ka) {
        fail(api, "`b` must be [N, K] with K = a.shape[1] = " + std::to_string(ka) +
                      ", got shape " + shape_str(arg[1]));
      }
      owned = std::make_shared<PackedS8>(reinterpret_cast<const int8_t*>(bb->data),
                                         static_cast<int>(bb->dimensions[0]),
                                         static_cast<int>(bb->dimensions[1]));
      b = owned.get();
    }
    if (ka != b->k()) {
      fail(api, "`a` must be [M, K] with K = " + std::to_string(b->k()) + ", got shape " +
                    shape_str(arg[0]));
    }
    const int m = static_cast<int>(a->dimensions[0]);
    py::object c = new_matrix(g_np.descr_i32, m, b->n());
    const int8_t* ap = reinterpret_cast<const int8_t*>(a->data);
    int32_t* cp = matrix_data<int32_t>(c);
    run_kernel(static_cast<double>(m) * b->n() * b->k(),
               [&] { gemm_s8s8s32(m, ap, b->k(), *b, cp, b->n(), static_cast<int>(threads)); });
    return c.release().ptr();
  } catch (...) {
    set_python_error();
    return nullptr;
  }
}

// Looks up what the entry points cache and adds them to module `m`.
void add_fast_functions(py::module_& m) {
  const auto& api = npy::get();
  g_np.array_type = api.PyArray_Type_;
  g_np.new_from_descr = api.PyArray_NewFromDescr_;
  g_np.descr_i8 = py::dtype::of<int8_t>().release().ptr();  // kept for the process's lifetime
  g_np.descr_i32 = py::dtype::of<int32_t>().release().ptr();
  g_np.descr_f32 = py::dtype::of<float>().release().ptr();
  auto type_ptr = [](py::handle t) { return reinterpret_cast<PyTypeObject*>(t.ptr()); };
  g_type_s8 = type_ptr(py::type::of<PyPackedS8>());
  g_type_f32 = type_ptr(py::type::of<PyPackedF32>());
  g_type_bsr_s8 = type_ptr(py::type::of<PyPackedBsrS8>());
  g_type_bsr_f32 = type_ptr(py::type::of<PyPackedBsrF32>());
  g_type_cb_s8 = type_ptr(py::type::of<PyPackedCodebookS8>());
  g_type_cb_f32 = type_ptr(py::type::of<PyPackedCodebookF32>());
  for (Signature* sig : {&g_sig_linear_s8, &g_sig_linear_f32, &g_sig_gemm}) {
    for (int i = 0; i < sig->nparams; ++i) {
      sig->interned[i] = PyUnicode_InternFromString(sig->names[i]);
      if (!sig->interned[i]) throw py::error_already_set();
    }
  }
  // The text before "--" is the signature inspect.signature() reads.
  static PyMethodDef defs[] = {
      {"gemm_s8s8s32", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(py_gemm_s8s8s32)),
       METH_FASTCALL | METH_KEYWORDS,
       "gemm_s8s8s32($module, a, b, threads=1)\n--\n\n"
       "C_s32[M,N] = a_s8[M,K] . b_s8[N,K]^T, exact. b: int8 array or PackedLinearS8."},
      {"linear_s8", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(py_linear_s8)),
       METH_FASTCALL | METH_KEYWORDS,
       "linear_s8($module, x, packed, bias, input_zero_point, multiplier, shift,\n"
       "          output_zero_point, clamp=(-128, 127), threads=1)\n--\n\n"
       "Fused int8 linear (TFLite int8 spec requantization)."},
      {"linear_f32", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(py_linear_f32)),
       METH_FASTCALL | METH_KEYWORDS,
       "linear_f32($module, x, packed, bias=None, clamp=(-math.inf, math.inf), threads=1)\n--\n\n"
       "fp32 linear with bias and clamp."},
      {nullptr, nullptr, 0, nullptr}};
  if (PyModule_AddFunctions(m.ptr(), defs) != 0) throw py::error_already_set();
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
  add_fast_functions(m);
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
