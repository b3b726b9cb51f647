// Re-blocking of a BSR view into a kernel's native R x C block: shared by the packers of every
// block-sparse path (generic code, no ISA instructions).
//
// Everything here has internal linkage (anonymous namespace): the header is compiled under each
// ISA's flags, and one linker-merged copy built with e.g. -mavx512f would be a SIGILL elsewhere.
//
// A native block is stored when any source block touches it; its values come from the source
// blocks and zeros fill the rest. Each native block covers at least one source block, so the work
// never exceeds one native block per stored source block.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "common/isa_local.h"

namespace edgeopt {
namespace {

// Per group of kR output channels, the ascending list of kC-wide k groups that any source block
// touches. `cols` (block k-group indices) and `ptr` (group starts, groups + 1 entries) are filled
// when non-null; returns the number of native blocks.
template <int kR, int kC, typename View>
size_t bsr_reblock_structure(const View& w, LocalVec<int32_t>* ptr, LocalVec<int32_t>* cols) {
  const int groups = (w.n + kR - 1) / kR;
  const int kgroups = (w.k + kC - 1) / kC;
  LocalVec<int32_t> stamp(kgroups, -1);
  LocalVec<int32_t> list;
  size_t total = 0;
  if (ptr) ptr->assign(1, 0);
  for (int g = 0; g < groups; ++g) {
    list.clear();
    const int row0 = g * kR, row1 = std::min(w.n, row0 + kR);
    for (int sb = row0 / w.r; sb * w.r < row1 && sb < w.block_rows; ++sb) {
      for (int j = w.row_ptr[sb]; j < w.row_ptr[sb + 1]; ++j) {
        const int k0 = w.col_idx[j] * w.c;
        const int k1 = std::min(w.k, k0 + w.c) - 1;
        for (int q = k0 / kC; q <= k1 / kC; ++q) {
          if (stamp[q] != g) {
            stamp[q] = g;
            list.push_back(q);
          }
        }
      }
    }
    local_sort(list.begin(), list.end());
    total += list.size();
    if (cols) cols->append(list.begin(), list.end());
    if (ptr) ptr->push_back(static_cast<int32_t>(total));
  }
  return total;
}

// Calls store(block, row, col, value) for every value of every stored source block, with `block`
// the native block (index into `cols`) that holds it and (row, col) its place inside that block.
template <int kR, int kC, typename View, typename Store>
void bsr_reblock_values(const View& w, const LocalVec<int32_t>& ptr,
                        const LocalVec<int32_t>& cols, Store store) {
  const int groups = (w.n + kR - 1) / kR;
  LocalVec<int32_t> pos((w.k + kC - 1) / kC, -1);
  for (int g = 0; g < groups; ++g) {
    for (int b = ptr[g]; b < ptr[g + 1]; ++b) pos[cols[b]] = b;
    const int row0 = g * kR, row1 = std::min(w.n, row0 + kR);
    for (int sb = row0 / w.r; sb * w.r < row1 && sb < w.block_rows; ++sb) {
      for (int j = w.row_ptr[sb]; j < w.row_ptr[sb + 1]; ++j) {
        const auto* src = w.values + static_cast<size_t>(j) * w.r * w.c;
        for (int rr = 0; rr < w.r; ++rr) {
          const int row = sb * w.r + rr;
          if (row < row0 || row >= row1) continue;
          for (int cc = 0; cc < w.c; ++cc) {
            const int kk = w.col_idx[j] * w.c + cc;
            if (kk >= w.k) continue;
            store(static_cast<size_t>(pos[kk / kC]), row - row0, kk % kC, src[rr * w.c + cc]);
          }
        }
      }
    }
  }
}

// Native block rows of the kernels that store KR x C units with KR in {16, 8, 4}: the largest
// that divides R (4 for R = 1, 2).
inline int bsr_canon_rows(int r) {
  return r % 16 == 0 ? 16 : r % 8 == 0 ? 8 : 4;
}

// bsr_reblock_structure with the native block rows kr (16, 8 or 4) chosen at run time.
template <int kC, typename View>
size_t bsr_reblock_structure_kr(int kr, const View& w, LocalVec<int32_t>* ptr,
                                LocalVec<int32_t>* cols) {
  switch (kr) {
    case 16: return bsr_reblock_structure<16, kC>(w, ptr, cols);
    case 8: return bsr_reblock_structure<8, kC>(w, ptr, cols);
    default: return bsr_reblock_structure<4, kC>(w, ptr, cols);
  }
}

// bsr_reblock_values with the native block rows kr (16, 8 or 4) chosen at run time.
template <int kC, typename View, typename Store>
void bsr_reblock_values_kr(int kr, const View& w, const LocalVec<int32_t>& ptr,
                           const LocalVec<int32_t>& cols, Store store) {
  switch (kr) {
    case 16: bsr_reblock_values<16, kC>(w, ptr, cols, store); break;
    case 8: bsr_reblock_values<8, kC>(w, ptr, cols, store); break;
    default: bsr_reblock_values<4, kC>(w, ptr, cols, store); break;
  }
}

}  // namespace
}  // namespace edgeopt
