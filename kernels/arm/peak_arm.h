// Peak int8 multiply-accumulate throughput of one ARM core (the roofline the GEMMs are held to).
#pragma once

#include "edgeopt/path.h"

namespace edgeopt {

// GOPS (1 MAC = 2 ops) of the calling core on path p, measured with long independent chains of
// the path's widest int8 MAC: SMLAL/VMLAL.S8 (8 MACs) for kNeon, SDOT (16 MACs) for kNeonDot.
// Takes about 20-50 ms. Returns 0 for a path that is not an ARM path compiled into this binary;
// the caller must only ask for a path the CPU has (see cpu_paths()).
double peak_int8_gops_arm(Path p);

namespace internal {
// Runs `iterations` passes of the SDOT chains (peak_arm_neondot.cc, AArch64 with dotprod only);
// returns the MACs executed.
double peak_sdot_loop(long iterations);
}  // namespace internal

}  // namespace edgeopt
