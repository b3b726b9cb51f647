// Packed weights decoded at load (format 1.3): a BSR weight whose stored block values are
// `bits`-bit codebook indices (block sparsity + weight sharing) and whose stored blocks are a bit
// mask becomes the ordinary int8 BSR (row_ptr, col_idx, values) the operator builders take, so
// the kernels never see the packed form. Inline int8 weights (format 1.5) carry the same packed
// bytes in vectors of their Weight table and are decoded here into storage the operator owns.
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

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

// row_ptr and col_idx of a BSR weight from its block mask (one bit per block of the brs x bcs
// grid, row-major, low bits first); `what` names the field in errors.
void mask_to_bsr(const Build& b, const uint8_t* mask, int64_t brs, int64_t bcs, const char* what,
                 std::vector<int32_t>* row_ptr, std::vector<int32_t>* col) {
  const int64_t cells = brs * bcs;
  b.require(cells % 8 == 0 || (mask[cells / 8] >> (cells % 8)) == 0, what, " sets bits past the ",
            cells, " blocks of the matrix");
  row_ptr->assign(static_cast<size_t>(brs) + 1, 0);
  col->clear();
  for (int64_t br = 0; br < brs; ++br) {
    for (int64_t bc = 0; bc < bcs; ++bc) {
      const int64_t bit = br * bcs + bc;
      if ((mask[bit >> 3] >> (bit & 7)) & 1) col->push_back(static_cast<int32_t>(bc));
    }
    (*row_ptr)[static_cast<size_t>(br) + 1] = static_cast<int32_t>(col->size());
  }
}

int64_t popcount_bits(const uint8_t* mask, int64_t cells) {
  int64_t nnz = 0;
  for (int64_t bit = 0; bit < cells; ++bit) nnz += (mask[bit >> 3] >> (bit & 7)) & 1;
  return nnz;
}

// row_ptr and col_idx of a BSR weight from its block mask tensor (format 1.3).
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
  const int64_t nnz = popcount_bits(mask, cells);
  Tensor& ci = decoded_target(b, tensors, w.col_idx(), DType::kS32, nnz, "weight.col_idx");
  b.require(&rp != &ci, "weight.row_ptr and weight.col_idx are the same tensor");
  std::vector<int32_t> row_ptr, col;
  col.reserve(static_cast<size_t>(nnz));
  mask_to_bsr(b, mask, brs, bcs, "weight.block_mask", &row_ptr, &col);
  storage->s32.push_back(std::move(row_ptr));
  rp.constant = reinterpret_cast<const uint8_t*>(storage->s32.back().data());
  storage->s32.push_back(std::move(col));
  ci.constant = reinterpret_cast<const uint8_t*>(storage->s32.back().data());
}

// The int8 blocks [nnz, R, C] of a packed BSR weight: each stored value's `bits`-bit index
// (a little-endian bit stream of idx_bytes bytes) looked up in its row of `table` (`entries`
// per row; one row, or one per output channel). Entries past the matrix edge stay 0; an index
// at or past `entries` is refused naming `idx_what`.
void unpack_block_values(const Build& b, const int32_t* row_ptr, const int32_t* col, int64_t brs,
                         int r, int c, int n, int k, int bits, const uint8_t* idx,
                         int64_t idx_bytes, const int8_t* table, int entries, bool per_channel,
                         const char* idx_what, int8_t* out) {
  const unsigned mask = (1u << bits) - 1u;
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
          b.require(q < static_cast<unsigned>(entries), idx_what, ": index ", q, " of value ", e,
                    " is past the ", entries, "-entry table");
          out[e] = t[q];
        }
      }
    }
  }
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
  unpack_block_values(b, row_ptr, col, brs, r, c, n, k, bits, idx, idx_bytes, table, entries,
                      per_channel, "weight.indices", out->data());
  v.constant = reinterpret_cast<const uint8_t*>(out->data());
}

}  // namespace

bool has_inline_weight(const eom::Weight& w) {
  return w.inline_block_mask() || w.inline_indices() || w.inline_table() || w.inline_values() ||
         w.inline_bias();
}

size_t inline_weight_bytes(const eom::Weight* w) {
  if (!w) return 0;
  size_t bytes = 0;
  if (w->inline_block_mask()) bytes += w->inline_block_mask()->size();
  if (w->inline_indices()) bytes += w->inline_indices()->size();
  if (w->inline_table()) bytes += w->inline_table()->size();
  if (w->inline_values()) bytes += w->inline_values()->size();
  if (w->inline_bias()) bytes += w->inline_bias()->size() * sizeof(int32_t);
  return bytes;
}

InlineS8Weight decode_inline_s8(const Build& b, int n, int k) {
  const eom::Weight& w = *b.op().weight();
  InlineS8Weight out;
  b.require(n >= 1 && k >= 1 && static_cast<int64_t>(n) * k <= std::numeric_limits<int32_t>::max(),
            "inline weight [", n, ", ", k, "] must have 1 to 2^31 - 1 elements");
  const int fmt = static_cast<int>(w.format());
  b.require(fmt == eom::WeightFormat_BSR || fmt == eom::WeightFormat_CODEBOOK,
            "inline weight fields (format 1.5) need a BSR or CODEBOOK weight, got format ",
            eom::EnumNameWeightFormat(w.format()));
  const std::pair<const char*, int> tensor_fields[] = {
      {"values", w.values()},   {"row_ptr", w.row_ptr()}, {"col_idx", w.col_idx()},
      {"indices", w.indices()}, {"table", w.table()},     {"block_mask", w.block_mask()}};
  for (const auto& f : tensor_fields)
    b.require(f.second == -1, "weight.", f.first, " must be absent (-1) in an inline weight, got ",
              f.second);
  const int bits = w.bits();
  out.bits = bits;
  out.per_channel = w.per_channel_table();
  const auto* mask = w.inline_block_mask();
  const auto* idx = w.inline_indices();
  const auto* table = w.inline_table();
  const auto* values = w.inline_values();
  // The table's rows and entries per row (E <= 2^bits), checked against `bits`.
  int entries = 0;
  const int64_t rows = out.per_channel ? n : 1;
  auto check_table = [&]() {
    b.require(table != nullptr, "weight.inline_table is missing (an inline weight with bits ", bits,
              " needs its codebook)");
    const int64_t size = table->size();
    b.require(size >= rows && size % rows == 0 && size / rows <= (int64_t{1} << bits),
              "weight.inline_table has ", size, " entries; expected ", rows, " row(s) (",
              out.per_channel ? "per_channel_table" : "one per layer", ") of 1 to ", 1 << bits,
              " entries (bits ", bits, ")");
    entries = static_cast<int>(size / rows);
  };
  if (fmt == eom::WeightFormat_BSR) {
    const auto block = b.ints(w.block(), 2, 1, 256, "weight.block");
    const int r = block[0], c = block[1];
    out.r = r;
    out.c = c;
    const int64_t brs = (static_cast<int64_t>(n) + r - 1) / r;
    const int64_t bcs = (static_cast<int64_t>(k) + c - 1) / c;
    const int64_t cells = brs * bcs;
    b.require(mask != nullptr,
              "weight.inline_block_mask is missing (an inline BSR weight needs it)");
    b.require(static_cast<int64_t>(mask->size()) == (cells + 7) / 8,
              "weight.inline_block_mask has ", mask->size(), " bytes; the ", brs, " x ", bcs,
              " block grid needs ", (cells + 7) / 8);
    mask_to_bsr(b, mask->data(), brs, bcs, "weight.inline_block_mask", &out.row_ptr, &out.col_idx);
    const int64_t nnz = out.row_ptr.back();
    const int64_t count = nnz * r * c;
    if (bits == 0) {
      b.require(idx == nullptr && table == nullptr,
                "weight.inline_indices / inline_table need bits 1 to 8 (bits is 0: int8 blocks in "
                "weight.inline_values)");
      b.require(values != nullptr, "weight.inline_values is missing (an inline BSR weight with ",
                "bits 0 stores its int8 blocks there)");
      b.require(static_cast<int64_t>(values->size()) == count, "weight.inline_values has ",
                values->size(), " entries; ", nnz, " blocks of ", r, " x ", c, " need ", count);
      out.values.assign(values->begin(), values->end());
      return out;
    }
    b.require(bits >= 1 && bits <= 8, "packed weight.bits must be 1 to 8, got ", bits);
    b.require(values == nullptr, "weight.inline_values is for bits 0 (int8 blocks); this weight ",
              "has ", bits, "-bit indices");
    check_table();
    b.require(idx != nullptr, "weight.inline_indices is missing (an inline packed BSR weight ",
              "needs its ", bits, "-bit indices)");
    const int64_t idx_bytes = (count * bits + 7) / 8;
    b.require(static_cast<int64_t>(idx->size()) == idx_bytes, "weight.inline_indices has ",
              idx->size(), " bytes; ", count, " values of ", bits, " bits need ", idx_bytes);
    out.values.assign(static_cast<size_t>(count), 0);
    unpack_block_values(b, out.row_ptr.data(), out.col_idx.data(), brs, r, c, n, k, bits,
                        idx->data(), idx_bytes, table->data(), entries, out.per_channel,
                        "weight.inline_indices", out.values.data());
    return out;
  }
  // CODEBOOK: rows of ceil(k * bits / 8) bytes, each starting on a byte.
  b.require(bits == 1 || bits == 2 || bits == 4 || bits == 8,
            "weight.bits must be 1, 2, 4 or 8, got ", bits);
  b.require(mask == nullptr && values == nullptr,
            "weight.inline_block_mask / inline_values belong to BSR weights, not CODEBOOK");
  check_table();
  b.require(idx != nullptr, "weight.inline_indices is missing (an inline CODEBOOK weight needs ",
            "its indices)");
  const int64_t row_bytes = (static_cast<int64_t>(k) * bits + 7) / 8;
  b.require(static_cast<int64_t>(idx->size()) == row_bytes * n, "weight.inline_indices has ",
            idx->size(), " bytes; ", n, " rows of ", k, " ", bits, "-bit indices need ",
            row_bytes * n);
  const int full = 1 << bits, per_byte = 8 / bits;
  out.idx.resize(static_cast<size_t>(n) * k);
  for (int i = 0; i < n; ++i) {
    const uint8_t* row = idx->data() + i * row_bytes;
    for (int j = 0; j < k; ++j) {
      const unsigned q = (row[j / per_byte] >> ((j % per_byte) * bits)) & (full - 1);
      b.require(q < static_cast<unsigned>(entries), "weight.inline_indices: index ", q, " at [", i,
                ", ", j, "] is past the ", entries, "-entry table");
      out.idx[static_cast<size_t>(i) * k + j] = static_cast<uint8_t>(q);
    }
  }
  // The kernels take 2^bits entries per row: the unused ones are 0.
  out.values.assign(static_cast<size_t>(rows) * full, 0);
  for (int64_t i = 0; i < rows; ++i)
    for (int e = 0; e < entries; ++e)
      out.values[static_cast<size_t>(i) * full + e] =
          table->Get(static_cast<flatbuffers::uoffset_t>(i * entries + e));
  return out;
}

bool inline_bias(const Build& b, int n, std::vector<int32_t>* out) {
  const eom::Weight* w = b.op().weight();
  if (!w || !w->inline_bias()) return false;
  b.require(b.op().bias() == -1, "bias must be -1 with weight.inline_bias (format 1.5), got ",
            b.op().bias());
  b.require(w->inline_block_mask() || w->inline_indices() || w->inline_values(),
            "weight.inline_bias needs an inline weight (format 1.5): a pre-1.5 reader would run "
            "the operator without it");
  const auto* v = w->inline_bias();
  b.require(static_cast<int64_t>(v->size()) == n, "weight.inline_bias has ", v->size(),
            " entries; the operator has ", n, " output channels");
  out->assign(v->begin(), v->end());
  return true;
}

void decode_packed_weights(const eom::Model& m, std::vector<Tensor>& tensors,
                           DecodedStorage* storage) {
  const size_t nops = m.operators() ? m.operators()->size() : 0;
  for (size_t i = 0; i < nops; ++i) {
    const eom::Operator& fop = *m.operators()->Get(static_cast<flatbuffers::uoffset_t>(i));
    const eom::Weight* w = fop.weight();
    // Inline weights (format 1.5) are decoded by their operator's builder (decode_inline_s8).
    if (!w || has_inline_weight(*w) ||
        (w->table() < 0 && w->block_mask() < 0 &&
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
