// pybind11 skin over the model runtime (optimizer._runtime): argument checks and conversion only.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "edgeopt/runtime.h"

namespace py = pybind11;
using edgeopt::runtime::DType;
using edgeopt::runtime::LayerInfo;
using edgeopt::runtime::Model;
using edgeopt::runtime::ModelError;
using edgeopt::runtime::TensorSpec;

namespace {

py::dtype np_dtype(DType t) {
  switch (t) {
    case DType::kF32: return py::dtype::of<float>();
    case DType::kS8: return py::dtype::of<int8_t>();
    case DType::kS32: return py::dtype::of<int32_t>();
    case DType::kU8: return py::dtype::of<uint8_t>();
  }
  return py::dtype::of<float>();
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

std::string shape_str(const py::array& a) {
  std::vector<int64_t> s;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s.push_back(a.shape(i));
  return shape_str(s);
}

// numpy's type number of a dtype (cached: comparing numbers costs no Python objects).
int dtype_num(DType t) {
  static const int nums[4] = {py::dtype::of<float>().num(), py::dtype::of<int8_t>().num(),
                              py::dtype::of<int32_t>().num(), py::dtype::of<uint8_t>().num()};
  const int i = static_cast<int>(t);
  return i >= 0 && i < 4 ? nums[i] : -1;
}

// Whether a run is short enough (under ~1 M multiply-accumulates: microseconds) that run1
// keeps the GIL. Summed per call: a small model has few layers, and a large one runs for far
// longer than the sum takes.
bool small_model(const Model& m) {
  int64_t macs = 0;
  for (const LayerInfo& l : m.layers()) macs += l.macs;
  return macs < (int64_t{1} << 20);
}

py::dict spec_dict(const TensorSpec& s) {
  py::dict d;
  d["name"] = s.name;
  d["shape"] = py::tuple(py::cast(s.shape));
  d["dtype"] = np_dtype(s.dtype);
  if (s.dtype == DType::kS8) {
    d["scale"] = s.scale;
    d["zero_point"] = s.zero_point;
  }
  return d;
}

// The arrays of one run, checked against the model's inputs; outputs allocated.
struct Call {
  std::vector<py::array> keep;
  std::vector<const void*> in;
  std::vector<py::array> out_arrays;
  std::vector<void*> out;
};

Call prepare(const Model& m, const py::sequence& inputs) {
  const auto& specs = m.inputs();
  if (static_cast<size_t>(py::len(inputs)) != specs.size()) {
    throw py::value_error("Runtime.run: the model takes " + std::to_string(specs.size()) +
                          " input(s), got " + std::to_string(py::len(inputs)));
  }
  Call c;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    py::object obj = inputs[i];
    if (!py::isinstance<py::array>(obj)) {
      throw py::value_error("Runtime.run: input " + std::to_string(i) + " (`" + s.name +
                            "`) must be a numpy array, got " +
                            py::str(py::type::of(obj)).cast<std::string>());
    }
    py::array a = py::reinterpret_borrow<py::array>(obj);
    const py::dtype want = np_dtype(s.dtype);
    if (!a.dtype().is(want) && !a.dtype().equal(want)) {
      throw py::value_error("Runtime.run: input " + std::to_string(i) + " (`" + s.name +
                            "`) must have dtype " + py::str(want).cast<std::string>() + ", got " +
                            py::str(a.dtype()).cast<std::string>());
    }
    bool same = a.ndim() == static_cast<py::ssize_t>(s.shape.size());
    for (py::ssize_t d = 0; same && d < a.ndim(); ++d) same = a.shape(d) == s.shape[d];
    if (!same) {
      throw py::value_error("Runtime.run: input " + std::to_string(i) + " (`" + s.name +
                            "`) must have shape " + shape_str(s.shape) +
                            " (fixed at export), got " + shape_str(a));
    }
    if (!(a.flags() & py::array::c_style)) {
      throw py::value_error("Runtime.run: input " + std::to_string(i) + " (`" + s.name +
                            "`) must be C-contiguous; pass np.ascontiguousarray(x)");
    }
    c.in.push_back(a.data());
    c.keep.push_back(a);
  }
  for (const TensorSpec& s : m.outputs()) {
    std::vector<py::ssize_t> shape(s.shape.begin(), s.shape.end());
    py::array a(np_dtype(s.dtype), shape);
    c.out.push_back(a.mutable_data());
    c.out_arrays.push_back(a);
  }
  return c;
}

py::object outputs_of(Call& c) {
  py::list l;
  for (auto& a : c.out_arrays) l.append(a);
  return std::move(l);
}

}  // namespace

PYBIND11_MODULE(_runtime, m) {
  m.doc() = "The native model runtime: load a .eom file, run it, time it per layer.";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ModelError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::system_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });
  m.attr("FORMAT_VERSION") =
      py::make_tuple(edgeopt::runtime::kFormatMajor, edgeopt::runtime::kFormatMinor);
  m.def("crc32", [](py::bytes data) {
    const std::string s = data;
    return edgeopt::runtime::crc32(s.data(), s.size());
  });
  py::class_<Model>(m, "Model")
      .def_static(
          "load",
          [](const std::string& path) {
            py::gil_scoped_release nogil;
            return std::unique_ptr<Model>(Model::load(path));
          },
          py::arg("path"))
      .def_static(
          "from_bytes",
          [](py::bytes data) {
            const std::string s = data;
            py::gil_scoped_release nogil;
            return std::unique_ptr<Model>(Model::from_bytes(s.data(), s.size()));
          },
          py::arg("data"))
      .def_property_readonly("inputs",
                             [](const Model& mm) {
                               py::list l;
                               for (const auto& s : mm.inputs()) l.append(spec_dict(s));
                               return l;
                             })
      .def_property_readonly("outputs",
                             [](const Model& mm) {
                               py::list l;
                               for (const auto& s : mm.outputs()) l.append(spec_dict(s));
                               return l;
                             })
      .def_property("num_threads", &Model::num_threads,
                    [](Model& mm, int t) {
                      try {
                        mm.set_num_threads(t);
                      } catch (const std::invalid_argument& e) {
                        throw py::value_error(e.what());
                      }
                    })
      .def("run",
           [](Model& mm, const py::sequence& inputs) {
             Call c = prepare(mm, inputs);
             {
               py::gil_scoped_release nogil;
               mm.run(c.in, c.out);
             }
             return outputs_of(c);
           })
      // One input, one output: the fast path of optimizer.runtime's run(). Returns None when the
      // array is not exactly what the model takes (dtype, shape, C order): the caller then goes
      // the checked way, which raises the precise error.
      .def("run1",
           [](Model& mm, const py::array& x) -> py::object {
             if (mm.inputs().size() != 1 || mm.outputs().size() != 1) return py::none();
             const TensorSpec& s = mm.inputs()[0];
             if (!(x.flags() & py::array::c_style) || x.dtype().num() != dtype_num(s.dtype) ||
                 x.ndim() != static_cast<py::ssize_t>(s.shape.size()))
               return py::none();
             for (py::ssize_t d = 0; d < x.ndim(); ++d)
               if (x.shape(d) != s.shape[d]) return py::none();
             const TensorSpec& o = mm.outputs()[0];
             py::array y(np_dtype(o.dtype),
                         std::vector<py::ssize_t>(o.shape.begin(), o.shape.end()));
             // Reused argument vectors: no allocation per call besides the output array.
             thread_local std::vector<const void*> ins(1);
             thread_local std::vector<void*> outs(1);
             ins[0] = x.data();
             outs[0] = y.mutable_data();
             if (small_model(mm)) {
               // A run of a few microseconds keeps the GIL: releasing and taking it back costs
               // a tenth of such a run, and other Python threads wait no longer than a
               // bytecode's worth (the interpreter switches threads every 5 ms).
               mm.run(ins, outs);
             } else {
               py::gil_scoped_release nogil;
               mm.run(ins, outs);
             }
             return std::move(y);
           })
      .def("run_timed",
           [](Model& mm, const py::sequence& inputs, int runs) {
             // Plain runs timed here, like edgeopt-bench (no Python call overhead in the times).
             if (runs < 1) throw py::value_error("run_timed: runs must be >= 1");
             Call c = prepare(mm, inputs);
             std::vector<double> secs(static_cast<size_t>(runs));
             {
               py::gil_scoped_release nogil;
               using clock = std::chrono::steady_clock;
               for (double& t : secs) {
                 const auto t0 = clock::now();
                 mm.run(c.in, c.out);
                 t = std::chrono::duration<double>(clock::now() - t0).count();
               }
             }
             return secs;
           })
      .def("run_profiled",
           [](Model& mm, const py::sequence& inputs) {
             Call c = prepare(mm, inputs);
             std::vector<double> secs;
             {
               py::gil_scoped_release nogil;
               mm.run_profiled(c.in, c.out, &secs);
             }
             return py::make_tuple(outputs_of(c), secs);
           })
      .def_property_readonly("layers",
                             [](const Model& mm) {
                               py::list l;
                               for (const auto& li : mm.layers()) {
                                 py::dict d;
                                 d["name"] = li.name;
                                 d["op"] = li.op;
                                 d["kernel"] = li.kernel;
                                 d["macs"] = li.macs;
                                 l.append(d);
                               }
                               return l;
                             })
      .def_property_readonly("arena_bytes", &Model::arena_bytes)
      .def_property_readonly("activation_bytes", &Model::activation_bytes)
      .def_property_readonly("weight_bytes", &Model::weight_bytes)
      .def_property_readonly("file_bytes", &Model::file_bytes)
      .def_property_readonly("producer", &Model::producer)
      .def_property_readonly("metadata", [](const Model& mm) {
        py::dict d;
        for (const auto& kv : mm.metadata()) d[py::str(kv.first)] = kv.second;
        return d;
      });
}
