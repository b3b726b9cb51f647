// Public API of the native model runtime: load a .eom file, run it, time it layer by layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace edgeopt {
namespace runtime {

// A .eom file the runtime refuses: truncated, corrupted (checksum), another format version or
// byte order, a FlatBuffer that does not verify, or any offset, size, shape, index or option out
// of range. what() says what is wrong and where (operator index and PyTorch module path).
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Format version this runtime reads: files with another major version are refused; a newer
// minor version is read (fields are only appended).
constexpr uint16_t kFormatMajor = 1;
constexpr uint16_t kFormatMinor = 5;
constexpr size_t kHeaderSize = 64;
constexpr size_t kAlignment = 64;
// Buffers under kAlignment bytes may be aligned to this only (format 1.3).
constexpr size_t kSmallAlignment = 16;
// Bytes 0..7 of every .eom file (PNG-style: a high byte and CR LF / ^Z / LF catch text-mode
// transfers that would corrupt it).
constexpr char kMagic[8] = {'\x89', 'E', 'O', 'M', '\r', '\n', '\x1a', '\n'};
// Written as a little-endian uint32 at byte 12; a file from a big-endian writer reads it swapped.
constexpr uint32_t kEndianMarker = 0x0A0B0C0Du;

// CRC-32 (IEEE 802.3, zlib's crc32): the checksum of bytes [24, file size) stored at byte 20.
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

enum class DType : int { kF32 = 0, kS8 = 1, kS32 = 2, kU8 = 3 };
const char* dtype_name(DType t);
size_t dtype_size(DType t);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kF32;
  float scale = 0.0f;  // S8 graph inputs/outputs: their quantization
  int32_t zero_point = 0;
  size_t elements() const;
  size_t bytes() const;
};

struct LayerInfo {
  std::string name;    // the PyTorch module path the operator came from
  std::string op;      // "conv2d", "linear", "add", ...
  std::string kernel;  // the kernel and ISA path that ran it (known after the first run)
  int64_t macs = 0;    // multiply-accumulates of one run (conv / linear / matmul)
};

class Model {
 public:
  // Loads a .eom file (memory-mapped where the OS allows, else read) and packs its weights once
  // for this CPU. Throws ModelError for a bad file, std::system_error when it cannot be read.
  static std::unique_ptr<Model> load(const std::string& path);
  // The same from bytes in memory (copied).
  static std::unique_ptr<Model> from_bytes(const void* data, size_t size);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::vector<TensorSpec>& inputs() const;
  const std::vector<TensorSpec>& outputs() const;
  // Threads of the kernel calls (the caller is one of them); 1 by default, at most 256.
  int num_threads() const;
  void set_num_threads(int threads);

  // Runs the graph: inputs[i] holds inputs()[i].bytes() bytes, outputs[i] receives
  // outputs()[i].bytes(). Throws std::invalid_argument when the counts differ. One run at a
  // time per model (concurrent callers wait).
  void run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs);
  // The same, storing each layer's wall time in seconds (layers() order) in *layer_seconds.
  void run_profiled(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                    std::vector<double>* layer_seconds);

  const std::vector<LayerInfo>& layers() const;
  // Activation memory: the arena after liveness-based reuse, and the sum of all activation
  // tensors (what the arena would be without reuse).
  size_t arena_bytes() const;
  size_t activation_bytes() const;
  // Weight memory as stored in the file (dense, BSR or codebook).
  size_t weight_bytes() const;
  size_t file_bytes() const;
  const std::string& producer() const;
  const std::vector<std::pair<std::string, std::string>>& metadata() const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace runtime
}  // namespace edgeopt
