// Internal contract of the runtime: the verified graph the loader builds and the ops execute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edgeopt/runtime.h"

namespace edgeopt {
namespace runtime {

[[noreturn]] void fail(const std::string& msg);

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kF32;
  size_t elements = 0;
  size_t bytes = 0;
  const uint8_t* constant = nullptr;  // constants: their bytes in the file
  bool is_input = false;              // graph input (the caller's buffer)
  int producer = -1;                  // operator that writes it
  float scale = 0.0f;                 // per-tensor quantization (S8)
  int32_t zero_point = 0;
  int quant_count = 0;           // scales in the file's quantization (0: none)
  bool zero_points_zero = true;  // every zero point is 0 (symmetric int8 weights)
  int storage = -1;              // activations: storage slot (reshapes share their input's)
  bool decoded = false;          // a constant the loader decodes from a packed weight (1.3)
};

// Where each tensor's bytes are during one run.
struct RunContext {
  std::vector<uint8_t*> data;  // per tensor
  int threads = 1;
  template <typename T>
  T* get(int t) const {
    return reinterpret_cast<T*>(data[t]);
  }
};

class Op {
 public:
  virtual ~Op() = default;
  virtual void run(RunContext& ctx) = 0;
  // Ops whose output shares its input's bytes (RESHAPE) do nothing at run time.
  virtual bool aliases_input() const { return false; }
  std::vector<int> inputs, outputs;
  LayerInfo info;
};

}  // namespace runtime
}  // namespace edgeopt
