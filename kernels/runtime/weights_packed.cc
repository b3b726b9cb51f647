// Packed weights decoded at load (format 1.3): a BSR weight whose stored block values are
// `bits`-bit codebook indices (block sparsity + weight sharing) and whose stored blocks are a bit
// mask becomes the ordinary int8 BSR (row_ptr, col_idx, values) the operator builders take, so
// the kernels never see the packed form.
#include <string>

#include "runtime/build.h"

namespace edgeopt {
namespace runtime {

namespace {

// The `decoded` tensor `t` a weight field names, not yet filled, of dtype `dt` and `count`
// elements.
Tensor& decoded_target(const Build& b, std::vector<Tensor>& tensors, int t, DType dt, int64_t count,
                       const char* what) {
  b.require(t >= 0 && t < static_cast<int>(tensors.size()), what, ": tensor index ", t,
            " out of range");
  Tensor& v = tensors[t];
  b.require(v.decoded, what, " (`", v.name, "`) of a packed BSR weight must be a tensor marked ",
            "`decoded`");
  b.require(v.constant == nullptr, what, " (`", v.name, "`) is decoded by another weight already");
  b.require(v.dtype == dt && v.elements == static_cast<size_t>(count), what, " (`", v.name,
            "`) must be ", dtype_name(dt), " with ", count, " elements, got ", dtype_name(v.dtype),
            " ", shape_str(v.shape));
  return v;
}

// row_ptr and col_idx of a BSR weight from its block mask (one bit per block, row-major).
void decode_block_mask(Build& b, std::vector<Tensor>& tensors, int64_t brs, int64_t bcs,
                       DecodedStorage* storage) {
  const eom::Weight& w = *b.op().weight();
  const int64_t cells = brs * bcs;
  const uint8_t* mask =
      b.constant(w.block_mask(), DType::kU8, (cells + 7) / 8, "weight.block_mask");
  b.require(cells % 8 == 0 || (mask[cells / 8] >> (cells % 8)) == 0,
            "weight.block_mask sets bits past the ", cells, " blocks of the matrix");
  // Both targets are checked before anything is allocated: their declared sizes (at most
  // 2^31 - 1 elements each) must match the mask.
  Tensor& rp = decoded_target(b, tensors, w.row_ptr(), DType::kS32, brs + 1, "weight.row_ptr");
  int64_t nnz = 0;
  for (int64_t bit = 0; bit < cells; ++bit) nnz += (mask[bit >> 3] >> (bit & 7)) & 1;
  Tensor& ci = decoded_target(b, tensors, w.col_idx(), DType::kS32, nnz, "weight.col_idx");
  b.require(&rp != &ci, "weight.row_ptr and weight.col_idx are the same tensor");
  std::vector<int32_t> row_ptr(static_cast<size_t>(brs) + 1, 0), col;
  col.reserve(static_cast<size_t>(nnz));
  for (int64_t br = 0; br < brs; ++br) {
    for (int64_t bc = 0; bc < bcs; ++bc) {
      const int64_t bit = br * bcs + bc;
      if ((mask[bit >> 3] >> (bit & 7)) & 1) col.push_back(static_cast<int32_t>(bc));
    }
    row_ptr[static_cast<size_t>(br) + 1] = static_cast<int32_t>(col.size());
  }
  storage->s32.push_back(std::move(row_ptr));
  rp.constant = reinterpret_cast<const uint8_t*>(storage->s32.back().data());
  storage->s32.push_back(std::move(col));
  ci.constant = reinterpret_cast<const uint8_t*>(storage->s32.back().data());
}

// Decodes the packed BSR weight of one operator: the block mask into row_ptr / col_idx, and
// the packed indices into the values tensor.
void decode_packed_bsr(Build& b, std::vector<Tensor>& tensors, DecodedStorage* storage) {
  const eom::Weight& w = *b.op().weight();
  b.require(w.format() == eom::WeightFormat_BSR,
            "weight.table and weight.block_mask are only used by a BSR weight (format ",
            eom::EnumNameWeightFormat(w.format()), ")");
  const int n = w.n(), k = w.k(), bits = w.bits();
  b.require(n >= 1 && k >= 1, "packed weight is declared [", n, ", ", k, "]");
  const auto block = b.ints(w.block(), 2, 1, 256, "weight.block");
  const int r = block[0], c = block[1];
  const int64_t brs = (static_cast<int64_t>(n) + r - 1) / r;
  const int64_t bcs = (static_cast<int64_t>(k) + c - 1) / c;
  if (w.block_mask() >= 0) decode_block_mask(b, tensors, brs, bcs, storage);
  if (bits == 0 && w.table() < 0) return;  // int8 blocks stored as they are
  b.require(bits >= 1 && bits <= 8, "packed weight.bits must be 1 to 8, got ", bits);
  const auto* row_ptr = reinterpret_cast<const int32_t*>(
      b.constant(w.row_ptr(), DType::kS32, brs + 1, "weight.row_ptr"));
  b.require(row_ptr[0] == 0, "weight.row_ptr[0] must be 0, got ", row_ptr[0]);
  for (int64_t i = 0; i < brs; ++i)
    b.require(row_ptr[i + 1] >= row_ptr[i], "weight.row_ptr must not decrease (at ", i + 1, ")");
  const int64_t nnz = row_ptr[brs];
  b.require(nnz <= brs * bcs, "weight.row_ptr declares ", nnz, " blocks, more than the ", brs * bcs,
            " of the matrix");
  const auto* col =
      reinterpret_cast<const int32_t*>(b.constant(w.col_idx(), DType::kS32, nnz, "weight.col_idx"));
  const int64_t count = nnz * r * c;
  Tensor& v = decoded_target(b, tensors, w.values(), DType::kS8, count, "weight.values");
  const int64_t idx_bytes = (count * bits + 7) / 8;
  const uint8_t* idx =
      b.constant(w.indices(), DType::kU8, idx_bytes, "weight.indices (packed BSR)");
  const int entries = 1 << bits;
  const bool per_channel = w.per_channel_table();
  const auto* table = reinterpret_cast<const int8_t*>(b.constant(
      w.table(), DType::kS8, static_cast<int64_t>(per_channel ? n : 1) * entries, "weight.table"));
  storage->s8.emplace_back(static_cast<size_t>(count), 0);
  std::vector<int8_t>* out = &storage->s8.back();
  const unsigned mask = static_cast<unsigned>(entries - 1);
  for (int64_t br = 0; br < brs; ++br) {
    for (int64_t j = row_ptr[br]; j < row_ptr[br + 1]; ++j) {
      for (int rr = 0; rr < r; ++rr) {
        const int64_t row = br * r + rr;
        if (row >= n) break;  // past the matrix edge: 0
        const int8_t* t = table + (per_channel ? row * entries : 0);
        for (int cc = 0; cc < c; ++cc) {
          // Columns past the edge stay 0 (a col_idx out of range is refused by the builder).
          if (static_cast<int64_t>(col[j]) * c + cc >= k) break;
          const int64_t e = (j * r + rr) * c + cc;
          // A little-endian bit stream: an index may span two bytes (bits 3, 5, 6, 7).
          const int64_t bit = e * bits, byte = bit >> 3;
          unsigned word = idx[byte];
          if (byte + 1 < idx_bytes) word |= static_cast<unsigned>(idx[byte + 1]) << 8;
          const unsigned q = (word >> (bit & 7)) & mask;
          (*out)[static_cast<size_t>(e)] = t[q];
        }
      }
    }
  }
  v.constant = reinterpret_cast<const uint8_t*>(out->data());
}

}  // namespace

void decode_packed_weights(const eom::Model& m, std::vector<Tensor>& tensors,
                           DecodedStorage* storage) {
  const size_t nops = m.operators() ? m.operators()->size() : 0;
  for (size_t i = 0; i < nops; ++i) {
    const eom::Operator& fop = *m.operators()->Get(static_cast<flatbuffers::uoffset_t>(i));
    const eom::Weight* w = fop.weight();
    if (!w || (w->table() < 0 && w->block_mask() < 0 &&
               !(w->format() == eom::WeightFormat_BSR && w->bits() != 0)))
      continue;
    const char* type = eom::EnumNameOpType(fop.type());
    Build b(fop, static_cast<int>(i), tensors, type && *type ? type : "unknown type");
    decode_packed_bsr(b, tensors, storage);
  }
  for (size_t t = 0; t < tensors.size(); ++t) {
    if (tensors[t].decoded && tensors[t].constant == nullptr) {
      fail("tensor " + std::to_string(t) + " (`" + tensors[t].name.substr(0, 200) +
           "`) is marked decoded but no packed BSR weight fills it");
    }
  }
}

}  // namespace runtime
}  // namespace edgeopt
