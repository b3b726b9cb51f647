// CPU feature detection and path selection state (cpuid/xgetbv on x86, getauxval on Linux ARM).
#include "edgeopt/path.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <sstream>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define EDGEOPT_X86 1
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

#if (defined(__aarch64__) || defined(__arm__)) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace edgeopt {
namespace {

#ifdef EDGEOPT_X86
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

// Linux hands out the AMX tile-data state only on request; without the grant a tile instruction
// faults. Ask once; a refusal simply leaves AMX out of the available paths.
bool request_amx_permission() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

uint32_t detect_cpu() {
  uint32_t paths = kScalar;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return paths;
  const bool osxsave = (ecx >> 27) & 1;
  const bool avx = (ecx >> 28) & 1;
  const bool fma = (ecx >> 12) & 1;
  if (!osxsave || !avx) return paths;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;
  const bool zmm_os = (xcr0 & 0xE6) == 0xE6;
  const bool tile_os = (xcr0 & 0x60000) == 0x60000;
  if (__get_cpuid_max(0, nullptr) < 7) return paths;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool avx2 = (ebx >> 5) & 1;
  const bool bmi2 = (ebx >> 8) & 1;
  const bool f16c = true;  // implied by every AVX2 CPU we target; not used by int8 kernels
  (void)f16c;
  const bool avx512f = (ebx >> 16) & 1, avx512dq = (ebx >> 17) & 1;
  const bool avx512bw = (ebx >> 30) & 1, avx512vl = (ebx >> 31) & 1;
  const bool vnni = (ecx >> 11) & 1;
  const bool amx_tile = (edx >> 24) & 1, amx_int8 = (edx >> 25) & 1;
  if (ymm_os && avx2 && fma && bmi2) paths |= kAvx2;
  if ((paths & kAvx2) && zmm_os && avx512f && avx512dq && avx512bw && avx512vl && vnni)
    paths |= kAvx512Vnni;
  if ((paths & kAvx512Vnni) && amx_tile && amx_int8 && tile_os && request_amx_permission())
    paths |= kAmxInt8;
  return paths;
}
#elif (defined(__aarch64__) || defined(__arm__)) && defined(__linux__)
uint32_t detect_cpu() {
  uint32_t paths = kScalar;
  const unsigned long hwcap = getauxval(AT_HWCAP);
#if defined(__aarch64__)
  if (hwcap & (1ul << 1)) paths |= kNeon;      // HWCAP_ASIMD
  if (hwcap & (1ul << 20)) paths |= kNeonDot;  // HWCAP_ASIMDDP
#else
  if (hwcap & (1ul << 12)) paths |= kNeon;  // HWCAP_NEON
#endif
  return paths;
}
#else
uint32_t detect_cpu() {
  return kScalar;
}
#endif

uint32_t env_mask() {
  const char* s = std::getenv("EDGEOPT_PATHS");
  if (s == nullptr || *s == '\0') return kAllPaths;
  const uint32_t m = parse_paths(s);
  return m == 0 ? kAllPaths : (m | kScalar);
}

std::atomic<uint32_t> g_forced{0};
std::atomic<uint32_t> g_last{kScalar};

}  // namespace

uint32_t compiled_paths() {
  uint32_t p = kScalar;
#ifdef EDGEOPT_HAVE_AVX2
  p |= kAvx2;
#endif
#ifdef EDGEOPT_HAVE_AVX512VNNI
  p |= kAvx512Vnni;
#endif
#ifdef EDGEOPT_HAVE_AMX
  p |= kAmxInt8;
#endif
#ifdef EDGEOPT_HAVE_NEON
  p |= kNeon;
#endif
#ifdef EDGEOPT_HAVE_NEONDOT
  p |= kNeonDot;
#endif
  return p;
}

uint32_t cpu_paths() {
  static const uint32_t paths = detect_cpu();
  return paths;
}

uint32_t available_paths() {
  static const uint32_t base = compiled_paths() & cpu_paths() & env_mask();
  const uint32_t forced = g_forced.load(std::memory_order_relaxed);
  return forced ? (base & forced) | kScalar : base;
}

void force_paths(uint32_t mask) {
  g_forced.store(mask, std::memory_order_relaxed);
}
uint32_t forced_paths() {
  return g_forced.load(std::memory_order_relaxed);
}
Path last_path() {
  return static_cast<Path>(g_last.load(std::memory_order_relaxed));
}
void set_last_path(Path p) {
  g_last.store(p, std::memory_order_relaxed);
}

const char* path_name(Path p) {
  switch (p) {
    case kScalar: return "scalar";
    case kAvx2: return "avx2";
    case kAvx512Vnni: return "avx512vnni";
    case kAmxInt8: return "amx";
    case kNeon: return "neon";
    case kNeonDot: return "neondot";
  }
  return "unknown";
}

uint32_t parse_paths(const std::string& names) {
  uint32_t mask = 0;
  std::stringstream ss(names);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    while (!tok.empty() && tok.front() == ' ') tok.erase(tok.begin());
    while (!tok.empty() && tok.back() == ' ') tok.pop_back();
    bool found = false;
    for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
      if (tok == path_name(static_cast<Path>(bit))) {
        mask |= bit;
        found = true;
      }
    }
    if (!found) return 0;
  }
  return mask;
}

std::string cpu_description() {
  std::string out;
#ifdef EDGEOPT_X86
  char brand[49] = {0};
  unsigned regs[4];
  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i) {
      __cpuid(0x80000002 + i, regs[0], regs[1], regs[2], regs[3]);
      std::memcpy(brand + 16 * i, regs, 16);
    }
  }
  out = brand;
  while (!out.empty() && out.back() == ' ') out.pop_back();
#elif defined(__aarch64__)
  out = "aarch64";
#elif defined(__arm__)
  out = "armv7";
#else
  out = "unknown";
#endif
  out += " |";
  for (uint32_t bit = 1; bit & kAllPaths; bit <<= 1) {
    if (cpu_paths() & bit) {
      out += " ";
      out += path_name(static_cast<Path>(bit));
    }
  }
  return out;
}

}  // namespace edgeopt
