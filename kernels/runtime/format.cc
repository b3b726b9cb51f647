// The .eom container: CRC-32, dtype helpers, and the checked access the operator builders use.
#include <cstring>
#include <sstream>

#include "runtime/build.h"

namespace edgeopt {
namespace runtime {

namespace {

struct Crc32Table {
  uint32_t t[256];
  Crc32Table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
  }
};

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) {
  static const Crc32Table table;
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table.t[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kS8: return "int8";
    case DType::kS32: return "int32";
    case DType::kU8: return "uint8";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kS8: return 1;
    case DType::kS32: return 4;
    case DType::kU8: return 1;
  }
  return 0;
}

size_t TensorSpec::elements() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

size_t TensorSpec::bytes() const {
  return elements() * dtype_size(dtype);
}

void fail(const std::string& msg) {
  throw ModelError("edgeopt model: " + msg);
}

std::string file_string(const flatbuffers::String* s, const std::string& fallback) {
  if (s == nullptr) return fallback;
  const auto* p = reinterpret_cast<const uint8_t*>(s->data());
  const size_t n = s->size();
  std::string out;
  out.reserve(n);
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < n;) {
    const uint8_t c = p[i];
    // Length of a well-formed UTF-8 sequence starting at i (0: not one).
    size_t len = c >= 0x20 && c < 0x7f ? 1 : 0;
    if (c >= 0xc2 && c <= 0xf4) {
      const size_t want = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
      len = want;
      for (size_t k = 1; k < want; ++k)
        if (i + k >= n || (p[i + k] & 0xc0) != 0x80) len = 0;
      // Overlong 3/4-byte forms, surrogates and code points past U+10FFFF.
      if (len == 3 && ((c == 0xe0 && p[i + 1] < 0xa0) || (c == 0xed && p[i + 1] >= 0xa0))) len = 0;
      if (len == 4 && ((c == 0xf0 && p[i + 1] < 0x90) || (c == 0xf4 && p[i + 1] >= 0x90))) len = 0;
    }
    if (len == 0) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    } else {
      out.append(reinterpret_cast<const char*>(p + i), len);
      i += len;
    }
  }
  return out;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// ---- Build ------------------------------------------------------------------------------------

Build::Build(const eom::Operator& op, int index, std::vector<Tensor>& tensors,
             const char* type_name)
    : op_(op), index_(index), tensors_(tensors), type_name_(type_name) {
  const int nt = static_cast<int>(tensors.size());
  auto read = [&](const flatbuffers::Vector<int32_t>* v, std::vector<int>* out, const char* kind) {
    if (!v) return;
    for (auto t : *v) {
      if (t < 0 || t >= nt) {
        error(std::string(kind) + " tensor index " + std::to_string(t) + " out of range [0, " +
              std::to_string(nt) + ")");
      }
      out->push_back(t);
    }
  };
  read(op.inputs(), &inputs_, "input");
  read(op.outputs(), &outputs_, "output");
}

void Build::error(const std::string& msg) const {
  std::string name = file_string(op_.name(), std::string());
  if (name.size() > 200) name = name.substr(0, 200) + "...";
  fail("operator " + std::to_string(index_) + " (`" + name + "`, " + type_name_ + "): " + msg);
}

void Build::expect_inputs(int lo, int hi) const {
  require(num_inputs() >= lo && num_inputs() <= hi, "expects ", lo, lo == hi ? "" : " to ",
          lo == hi ? std::string() : std::to_string(hi), " inputs, got ", num_inputs());
}

void Build::expect_outputs(int lo, int hi) const {
  require(num_outputs() >= lo && num_outputs() <= hi, "expects ", lo, lo == hi ? "" : " to ",
          lo == hi ? std::string() : std::to_string(hi), " outputs, got ", num_outputs());
}

const Tensor& Build::activation_in(int i, DType dt) const {
  const Tensor& t = tensor(input(i));
  require(t.constant == nullptr, "input ", i, " (`", t.name,
          "`) must be an activation, got a constant");
  require(t.dtype == dt, "input ", i, " (`", t.name, "`) must be ", dtype_name(dt), ", got ",
          dtype_name(t.dtype));
  return t;
}

const Tensor& Build::any_in(int i, DType dt) const {
  const Tensor& t = tensor(input(i));
  require(t.dtype == dt, "input ", i, " (`", t.name, "`) must be ", dtype_name(dt), ", got ",
          dtype_name(t.dtype));
  return t;
}

void Build::check_output(int i, DType dt, const std::vector<int64_t>& shape) const {
  const Tensor& t = tensor(output(i));
  require(t.dtype == dt, "output ", i, " (`", t.name, "`) must be ", dtype_name(dt), ", got ",
          dtype_name(t.dtype));
  require(t.shape == shape, "output ", i, " (`", t.name, "`) must have shape ", shape_str(shape),
          ", the file says ", shape_str(t.shape));
}

const uint8_t* Build::constant(int tensor_index, DType dt, int64_t count, const char* what) const {
  require(tensor_index >= 0 && tensor_index < static_cast<int>(tensors_.size()), what,
          ": tensor index ", tensor_index, " out of range");
  const Tensor& t = tensors_[tensor_index];
  require(t.constant != nullptr, what, " (`", t.name, "`) must be a constant tensor");
  require(t.dtype == dt, what, " (`", t.name, "`) must be ", dtype_name(dt), ", got ",
          dtype_name(t.dtype));
  require(count < 0 || t.elements == static_cast<size_t>(count), what, " (`", t.name,
          "`) must have ", count, " elements, got ", t.elements, " (shape ", shape_str(t.shape),
          ")");
  return t.constant;
}

std::vector<int> Build::ints(const flatbuffers::Vector<int32_t>* v, int n, int lo, int hi,
                             const char* what) const {
  require(v != nullptr, "option `", what, "` is missing");
  require(n < 0 || static_cast<int>(v->size()) == n, "option `", what, "` must have ", n,
          " values, got ", v->size());
  std::vector<int> out;
  for (auto x : *v) {
    require(x >= lo && x <= hi, "option `", what, "` value ", x, " out of range [", lo, ", ", hi,
            "]");
    out.push_back(x);
  }
  return out;
}

}  // namespace runtime
}  // namespace edgeopt
