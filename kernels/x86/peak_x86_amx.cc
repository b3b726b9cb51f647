// AMX-INT8 MAC peak body: independent tdpbssd chains into 4 accumulator tiles.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "x86/peak_x86.h"

namespace edgeopt {
namespace detail {

namespace {
// Intel SDM tile configuration (palette 1): 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
}  // namespace

// Four accumulators (tmm0-3) from two A tiles (tmm4, tmm5) and two B tiles (tmm6, tmm7): the
// classic 2x2 blocking, so each tdpbssd is independent of the previous one. Needs the OS grant
// (ARCH_REQ_XCOMP_PERM) first.
double peak_macs_amx(long iters) {
  const double macs = static_cast<double>(iters) * 4 * 16 * 16 * 64;
  TileConfig cfg;
  std::memset(&cfg, 0, sizeof(cfg));
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  alignas(64) static const int8_t src[16 * 64] = {1};
  _tile_loadconfig(&cfg);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, src, 64);
  _tile_loadd(5, src, 64);
  _tile_loadd(6, src, 64);
  _tile_loadd(7, src, 64);
  for (long i = 0; i < iters; ++i) {
    _tile_dpbssd(0, 4, 6);
    _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6);
    _tile_dpbssd(3, 5, 7);
  }
  alignas(64) int32_t sink[16 * 16];
  _tile_stored(0, sink, 64);
  _tile_release();
  asm volatile("" : : "r"(sink) : "memory");
  return macs;
}

}  // namespace detail
}  // namespace edgeopt
