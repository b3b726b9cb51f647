// Kernel paths (ISA families): what was compiled in, what the CPU offers, and which one ran.
#pragma once

#include <cstdint>
#include <string>

namespace edgeopt {

// One bit per ISA path. A path is usable when it was compiled in AND the CPU reports it
// (cpuid + OS support on x86, getauxval hwcaps on Linux/Android ARM).
enum Path : uint32_t {
  kScalar = 1u << 0,
  kAvx2 = 1u << 1,        // AVX2 + FMA (Haswell and later)
  kAvx512Vnni = 1u << 2,  // AVX-512 F/BW/VL + VNNI (Ice Lake, Zen 4 and later)
  kAmxInt8 = 1u << 3,     // AMX tiles, int8 (Sapphire Rapids and later); needs the OS grant
  kNeon = 1u << 4,        // ARMv7 NEON / AArch64 Advanced SIMD
  kNeonDot = 1u << 5,     // AArch64 SDOT/UDOT (Armv8.2 dot product)
};

constexpr uint32_t kAllPaths = kScalar | kAvx2 | kAvx512Vnni | kAmxInt8 | kNeon | kNeonDot;

// Paths whose kernels were built into this binary.
uint32_t compiled_paths();
// Paths the running CPU (and OS) supports, whatever was compiled.
uint32_t cpu_paths();
// compiled & cpu & the EDGEOPT_PATHS environment mask (read once), & the forced mask if any.
uint32_t available_paths();
// Restricts dispatch to `mask` (0 = no restriction). Paths outside available are ignored.
void force_paths(uint32_t mask);
uint32_t forced_paths();
// The path that executed the last kernel call on any thread (ruy's "which path ran").
Path last_path();
void set_last_path(Path p);

const char* path_name(Path p);
// Parses "scalar", "avx2", ... ; returns 0 for an unknown name. Accepts comma-separated lists.
uint32_t parse_paths(const std::string& names);

// Human-readable description of the CPU ("AMD EPYC ... / avx2 avx512vnni").
std::string cpu_description();

}  // namespace edgeopt
