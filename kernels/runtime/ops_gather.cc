// GATHER: rows of a constant float table picked by int32 indices (nn.Embedding on token ids).
//
// out = indices.shape + table.shape[1:], out[i, ...] = table[indices[i], ...]. Indices come from
// the caller at run time, so every one is checked against [0, V) before any row is copied: an
// index out of range fails the run with std::invalid_argument (ValueError in Python) naming the
// operator, the position and the value, and the output is not written. The reference twin is
// numpy's `table[indices]` (tests/test_native_attention.py).
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/build.h"

namespace edgeopt {
namespace runtime {
namespace {

class Gather : public Op {
 public:
  std::string where;  // "operator 3 (`embed`)" for run-time errors
  std::string indices_name;
  std::vector<int64_t> indices_shape;
  size_t count = 0;  // indices
  size_t row = 0;    // floats per table row
  int64_t rows = 0;  // V

  void run(RunContext& ctx) override {
    const int32_t* idx = ctx.get<int32_t>(inputs[1]);
    const float* table = ctx.get<float>(inputs[0]);
    float* y = ctx.get<float>(outputs[0]);
    for (size_t i = 0; i < count; ++i) {
      if (idx[i] < 0 || idx[i] >= rows) fail_index(i, idx[i]);
    }
    for (size_t i = 0; i < count; ++i) {
      std::memcpy(y + i * row, table + static_cast<size_t>(idx[i]) * row, row * sizeof(float));
    }
    info.kernel = "f32_gather_rows__generic";
  }

 private:
  [[noreturn]] void fail_index(size_t flat, int32_t value) const {
    std::vector<int64_t> pos(indices_shape.size());
    size_t rest = flat;
    for (size_t d = indices_shape.size(); d-- > 0;) {
      pos[d] = static_cast<int64_t>(rest % static_cast<size_t>(indices_shape[d]));
      rest /= static_cast<size_t>(indices_shape[d]);
    }
    throw std::invalid_argument("edgeopt model: " + where + ": index " + std::to_string(value) +
                                " at position " + shape_str(pos) + " of input `" + indices_name +
                                "` is out of range [0, " + std::to_string(rows) +
                                ") (token ids must be < the embedding's vocabulary size)");
  }
};

}  // namespace

std::unique_ptr<Op> build_gather_op(Build& b) {
  b.expect_inputs(2, 2);
  b.expect_outputs(1, 1);
  const Tensor& table = b.tensor(b.input(0));
  b.constant(b.input(0), DType::kF32, -1, "table (input 0)");
  b.require(table.shape.size() >= 1, "table must have rank >= 1");
  const Tensor& idx = b.activation_in(1, DType::kS32);
  b.require(idx.quant_count == 0, "indices (`", idx.name, "`) must not be quantized");
  b.require(b.op().weight() == nullptr && b.op().bias() == -1, "takes no weight or bias");
  b.require(b.op().activation() == eom::Activation_NONE, "takes no fused activation");
  std::vector<int64_t> out = idx.shape;
  out.insert(out.end(), table.shape.begin() + 1, table.shape.end());
  b.require(out.size() <= 6, "output rank ", out.size(), " above 6");
  b.check_output(0, DType::kF32, out);
  const Tensor& y = b.tensor(b.output(0));
  b.require(y.quant_count == 0, "output (`", y.name, "`) must not be quantized");
  auto op = std::make_unique<Gather>();
  std::string name = b.op().name() ? b.op().name()->str() : std::string();
  if (name.size() > 200) name = name.substr(0, 200) + "...";
  op->where = "gather `" + name + "`";
  op->indices_name = idx.name.substr(0, 200);
  op->indices_shape = idx.shape;
  op->count = idx.elements;
  op->rows = table.shape[0];
  op->row = table.elements / static_cast<size_t>(table.shape[0]);
  op->info.op = "gather";
  op->info.kernel = "f32_gather_rows__generic";
  return op;
}

}  // namespace runtime
}  // namespace edgeopt
