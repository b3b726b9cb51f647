// Single-core int8 multiply-accumulate peak of an x86 path, measured with a dependency-free chain.
#pragma once

#include "edgeopt/path.h"

namespace edgeopt {

// Measured int8 MAC throughput of one core in GOPS (1 MAC = 2 ops) for path `p`: kAvx2
// (vpmaddubsw + vpmaddwd + vpaddd, 32 MACs per triple), kAvx512Vnni (vpdpbusd zmm, 64 MACs),
// kAmxInt8 (tdpbssd 16x16x64). Runs ~20-50 ms of work, best of a few runs, on the calling
// thread. Returns 0 when the path was not compiled in or the CPU (and OS) does not offer it.
double peak_int8_gops(Path p, int threads_hint_unused = 1);

namespace detail {
// Per-ISA bodies (defined in peak_x86_<isa>.cc, compiled with that ISA's flags). Each runs
// `iters` loop iterations and returns the number of int8 MACs executed.
double peak_macs_avx2(long iters);
double peak_macs_avx512vnni(long iters);
double peak_macs_amx(long iters);
}  // namespace detail

}  // namespace edgeopt
