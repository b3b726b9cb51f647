// Internal: what the loader hands each operator's builder (checked access to the file's tables).
#pragma once

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/graph.h"
#include "runtime/schema/eom_generated.h"

namespace edgeopt {
namespace runtime {

// A string read from the file, safe to print and to hand to Python: bytes that are not printable
// ASCII or well-formed UTF-8 become `\xNN`; `fallback` when the field is absent.
std::string file_string(const flatbuffers::String* s, const std::string& fallback);
std::string shape_str(const std::vector<int64_t>& shape);

// One operator being built: every accessor checks what it reads and throws ModelError naming
// the operator ("operator 3 (`features.0`, conv2d): ...").
class Build {
 public:
  Build(const eom::Operator& op, int index, std::vector<Tensor>& tensors, const char* type_name);

  [[noreturn]] void error(const std::string& msg) const;
  void require(bool ok, const char* what) const {
    if (!ok) error(what);
  }
  template <typename... Args>
  void require(bool ok, const Args&... parts) const {
    if (!ok) {
      std::ostringstream os;
      (os << ... << parts);
      error(os.str());
    }
  }

  const eom::Operator& op() const { return op_; }
  const char* type_name() const { return type_name_; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  int num_outputs() const { return static_cast<int>(outputs_.size()); }
  // Counts within [lo, hi] or the operator is refused.
  void expect_inputs(int lo, int hi) const;
  void expect_outputs(int lo, int hi) const;
  int input(int i) const { return inputs_.at(i); }
  int output(int i) const { return outputs_.at(i); }
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& outputs() const { return outputs_; }
  Tensor& tensor(int t) const { return tensors_.at(t); }
  // An activation (or graph input) of dtype `dt`: never a constant.
  const Tensor& activation_in(int i, DType dt) const;
  // An input that may be a constant (elementwise operands), of dtype `dt`.
  const Tensor& any_in(int i, DType dt) const;
  // Output i must have dtype `dt` and exactly `shape`.
  void check_output(int i, DType dt, const std::vector<int64_t>& shape) const;
  // A constant tensor of dtype `dt` with `count` elements (count < 0: any); returns its bytes.
  const uint8_t* constant(int tensor_index, DType dt, int64_t count, const char* what) const;
  // An int vector option of exactly `n` entries (n < 0: any), each in [lo, hi].
  std::vector<int> ints(const flatbuffers::Vector<int32_t>* v, int n, int lo, int hi,
                        const char* what) const;

 private:
  const eom::Operator& op_;
  int index_;
  std::vector<Tensor>& tensors_;
  const char* type_name_;
  std::vector<int> inputs_, outputs_;
};

// Geometry of a CONV2D (NHWC input, OHWI weight [n, k]), shared by the fp32 and int8 builders.
struct ConvGeometry {
  int N = 0, H = 0, W = 0, C = 0, OH = 0, OW = 0, O = 0, KH = 1, KW = 1, SH = 1, SW = 1, DH = 1,
      DW = 1, PT = 0, PL = 0, G = 1, Cg = 0, Og = 0, K = 0;
  bool pointwise = false;  // 1x1, stride 1, no padding: the NHWC input is the GEMM's A
  bool depthwise = false;  // groups == input channels > 1
};
// Reads and checks a CONV2D's input (an activation of dtype `dt`, 4-D NHWC), options (kernel,
// stride, dilation, pad, groups dividing both channel counts) and weight size; computes the
// output size (the output tensor itself is checked by the caller, with its dtype).
ConvGeometry read_conv_geometry(Build& b, DType dt);

// Builders of the fp32 operators (ops_f32.cc); each validates everything its kernel relies on.
std::unique_ptr<Op> build_f32_op(Build& b);
// Whether an operator runs int8 (QUANTIZE / DEQUANTIZE / LUT, or any S8 input or output; a
// TRANSPOSE of int8 values stays with the generic builder), and the int8 builders (ops_s8.cc).
bool is_s8_op(const Build& b);
std::unique_ptr<Op> build_s8_op(Build& b);
// Bytes of the tensors the loader decodes (they live as long as the model).
struct DecodedStorage {
  std::vector<std::vector<int8_t>> s8;
  std::vector<std::vector<int32_t>> s32;
};
// Packed weights (weights_packed.cc, format 1.3): fills the `decoded` tensors of every BSR weight
// with a block mask (row_ptr, col_idx) or `bits` > 0 (values); refuses a decoded tensor no weight
// fills.
void decode_packed_weights(const eom::Model& m, std::vector<Tensor>& tensors,
                           DecodedStorage* storage);
// Format 1.5: whether a weight carries inline bytes (any `inline_*` field), and how many.
bool has_inline_weight(const eom::Weight& w);
size_t inline_weight_bytes(const eom::Weight* w);
// An inline int8 weight decoded into storage of its own: BSR (`r` x `c` blocks, row_ptr and
// col_idx from the block mask, `values` the int8 blocks [nnz, r, c]) or CODEBOOK (`idx` the
// unpacked indices [n, k], `values` the table, 2^bits entries per row, one row or one per output
// channel). Checks every size against n, k, the block grid, `bits` and the table
// (weights_packed.cc).
struct InlineS8Weight {
  int r = 0, c = 0, bits = 0;
  bool per_channel = false;
  std::vector<int32_t> row_ptr, col_idx;
  std::vector<int8_t> values;
  std::vector<uint8_t> idx;
};
InlineS8Weight decode_inline_s8(const Build& b, int n, int k);
// The operator's bias from `Weight.inline_bias` (format 1.5; n entries, Operator.bias -1, only
// with an inline weight) into `out`; false when the weight has none.
bool inline_bias(const Build& b, int n, std::vector<int32_t>* out);
// GATHER (ops_gather.cc): rows of a constant F32 table by S32 indices; checks ids at run time.
std::unique_ptr<Op> build_gather_op(Build& b);

}  // namespace runtime
}  // namespace edgeopt
