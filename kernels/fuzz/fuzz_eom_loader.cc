// libFuzzer target: arbitrary bytes through the public .eom loader (Model::from_bytes), and a run
// of every small model that loads, so the FlatBuffer checks, the graph builders, the weight
// decoding and the operators are all fuzzed.
//
// A ModelError is the expected answer to a bad file and is swallowed; anything else (another
// exception, a crash, an AddressSanitizer / UndefinedBehaviorSanitizer report, a leak) is a
// finding. Built by `make fuzz` (CMake option EDGEOPT_FUZZ, clang only); see kernels/README.md.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "edgeopt/runtime.h"

namespace {

using edgeopt::runtime::Model;
using edgeopt::runtime::ModelError;

// A model that loads is run once only below these bounds (a 4 KiB file may declare a valid
// 100-MMAC model): the portable kernels under the sanitizers take ~50 ns a MAC, so one input
// stays under ~0.1 s, and the int8 ops (400k MACs a thread) can still split across 2 threads.
constexpr size_t kMaxRunBytes = size_t{1} << 20;  // activations + graph inputs + outputs
constexpr int64_t kMaxRunMacs = int64_t{1} << 21;

void put_le(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t get_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

#ifdef EDGEOPT_FUZZ_PLANTED_BUG
// Only in the self-test binary (tests/test_fuzz_loader.py): a one-byte heap overflow on every
// model with exactly one operator, which the test's seed is; proves a finding fails the run.
void planted_bug(const Model& m, size_t size) {
  if (m.layers().size() != 1) return;
  auto* copy = new uint8_t[size];
  volatile uint8_t past_end = copy[size];
  (void)past_end;
  delete[] copy;
}
#endif

// Runs on `threads` threads (the kernels split work across the thread pool only above a few
// thousand MACs per thread).
void run_zero_inputs(Model& m, int threads) {
  size_t bytes = m.activation_bytes();
  for (const auto& t : m.inputs()) bytes += t.bytes();
  for (const auto& t : m.outputs()) bytes += t.bytes();
  int64_t macs = 0;
  for (const auto& l : m.layers()) macs += l.macs;
  if (bytes > kMaxRunBytes || macs > kMaxRunMacs) return;
  std::vector<std::vector<uint8_t>> in, out;
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (const auto& t : m.inputs()) in.emplace_back(t.bytes(), 0);
  for (const auto& t : m.outputs()) out.emplace_back(t.bytes(), 0);
  for (auto& v : in) in_ptrs.push_back(v.data());
  for (auto& v : out) out_ptrs.push_back(v.data());
  m.set_num_threads(threads);
  m.run(in_ptrs, out_ptrs);
}

void load_and_run(const uint8_t* data, size_t size) {
  std::unique_ptr<Model> m;
  try {
    m = Model::from_bytes(data, size);
  } catch (const ModelError&) {
    return;  // a refused file: the expected outcome
  }
#ifdef EDGEOPT_FUZZ_PLANTED_BUG
  planted_bug(*m, size);
#endif
  // The last byte picks 1 or 2 threads, so the fuzzer explores the split work as well.
  run_zero_inputs(*m, size > 0 && (data[size - 1] & 1) ? 2 : 1);
}

}  // namespace

// UBSan stops at the first report, except those kernels/fuzz/ubsan.supp lists (known findings,
// whose checks CMake makes recoverable); UBSAN_OPTIONS still overrides these defaults.
extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1:suppressions=" EDGEOPT_UBSAN_SUPPRESSIONS;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As given: the header checks (magic, byte order, version, sizes, checksum).
  load_and_run(data, size);
  // Almost every mutation breaks the CRC-32, so the same bytes are loaded again with the
  // header's file size, data-section size and checksum made to agree with them: the mutation
  // then reaches the FlatBuffer verifier, the graph checks and the operators.
  using edgeopt::runtime::kHeaderSize;
  if (size < kHeaderSize || std::memcmp(data, edgeopt::runtime::kMagic, 8) != 0) return 0;
  std::vector<uint8_t> fixed(data, data + size);
  put_le(fixed.data() + 24, size, 8);
  const uint64_t data_offset = get_le(fixed.data() + 48, 8);
  if (data_offset <= size) put_le(fixed.data() + 56, size - data_offset, 8);
  put_le(fixed.data() + 20, edgeopt::runtime::crc32(fixed.data() + 24, size - 24), 4);
  if (std::memcmp(fixed.data(), data, size) != 0) load_and_run(fixed.data(), size);
  return 0;
}
