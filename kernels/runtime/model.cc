// Model loading (header, checksum, FlatBuffer verification, graph checks), the activation arena
// (liveness-based reuse) and the executor.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <system_error>

#include "runtime/build.h"

namespace edgeopt {
namespace runtime {

namespace {

// Activation memory above this is refused (a corrupted batch size would otherwise ask for it).
// The fuzz build (kernels/fuzz) lowers it below libFuzzer's memory limit, so that a valid but
// huge model is refused there instead of reported as out-of-memory.
#ifdef EDGEOPT_MAX_ARENA_BYTES
constexpr uint64_t kMaxArena = EDGEOPT_MAX_ARENA_BYTES;
#else
constexpr uint64_t kMaxArena = sizeof(void*) == 8 ? (uint64_t{16} << 30) : (uint64_t{1} << 30);
#endif
constexpr int kMaxRank = 6;

uint16_t rd16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) {
  return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32);
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// The bytes of a file: memory-mapped, or owned (from_bytes, or a file system without mmap).
class Bytes {
 public:
  Bytes() = default;
  ~Bytes() {
    if (map_) munmap(map_, size_);
  }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;

  static std::unique_ptr<Bytes> map_file(const std::string& path) {
    auto b = std::make_unique<Bytes>();
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "cannot open " + path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw std::system_error(e, std::generic_category(), "cannot stat " + path);
    }
    b->size_ = static_cast<size_t>(st.st_size);
    if (b->size_ > 0) {
      void* p = mmap(nullptr, b->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        b->map_ = p;
      } else {  // e.g. a pipe or a file system without mmap: read it
        b->own_.resize(b->size_);
        size_t got = 0;
        while (got < b->size_) {
          const ssize_t r = ::read(fd, b->own_.data() + got, b->size_ - got);
          if (r <= 0) break;
          got += static_cast<size_t>(r);
        }
        b->own_.resize(got);
        b->size_ = got;
      }
    }
    ::close(fd);
    return b;
  }
  static std::unique_ptr<Bytes> copy(const void* data, size_t size) {
    auto b = std::make_unique<Bytes>();
    // 64-byte aligned copy, so constants keep the alignment they have in the file.
    b->own_.resize(size + kAlignment);
    b->offset_ =
        (kAlignment - reinterpret_cast<uintptr_t>(b->own_.data()) % kAlignment) % kAlignment;
    if (size) std::memcpy(b->own_.data() + b->offset_, data, size);
    b->size_ = size;
    return b;
  }
  const uint8_t* data() const {
    return map_ ? static_cast<const uint8_t*>(map_) : own_.data() + offset_;
  }
  size_t size() const { return size_; }

 private:
  void* map_ = nullptr;
  size_t size_ = 0;
  size_t offset_ = 0;
  std::vector<uint8_t> own_;
};

struct Header {
  uint64_t model_offset, model_size, data_offset, data_size;
};

Header check_header(const uint8_t* p, size_t size) {
  if (size < kHeaderSize) {
    fail("file is truncated: " + std::to_string(size) + " bytes, smaller than the " +
         std::to_string(kHeaderSize) + "-byte header");
  }
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    fail("not a .eom model file (the first 8 bytes are not the .eom magic \\x89EOM\\r\\n\\x1a\\n)");
  }
  const uint32_t marker = rd32(p + 12);
  if (marker == __builtin_bswap32(kEndianMarker)) {
    fail(
        "file was written big-endian; this runtime reads little-endian .eom files only "
        "(re-export it with optimizer.export_native)");
  }
  if (marker != kEndianMarker) {
    fail("bad byte-order marker " + hex32(marker) + " (expected " + hex32(kEndianMarker) + ")");
  }
  const uint16_t major = rd16(p + 8), minor = rd16(p + 10);
  if (major != kFormatMajor) {
    fail("format version " + std::to_string(major) + "." + std::to_string(minor) +
         " is not supported: this runtime reads version " + std::to_string(kFormatMajor) + ".x " +
         (major > kFormatMajor ? "(update the runtime)" : "(re-export the model)"));
  }
  const uint32_t header_size = rd32(p + 16);
  if (header_size != kHeaderSize) {
    fail("header size " + std::to_string(header_size) + " is not " + std::to_string(kHeaderSize));
  }
  const uint64_t file_size = rd64(p + 24);
  if (file_size > size) {
    fail("file is truncated: the header says " + std::to_string(file_size) +
         " bytes, the file has " + std::to_string(size));
  }
  if (file_size < size) {
    fail("file has " + std::to_string(size - file_size) + " trailing bytes after the " +
         std::to_string(file_size) + " the header declares");
  }
  const uint32_t stored = rd32(p + 20);
  const uint32_t actual = crc32(p + 24, size - 24);
  if (stored != actual) {
    fail("checksum mismatch (stored " + hex32(stored) + ", computed " + hex32(actual) +
         "): the file is corrupted");
  }
  Header h{rd64(p + 32), rd64(p + 40), rd64(p + 48), rd64(p + 56)};
  if (h.model_offset != kHeaderSize || h.model_size > size - kHeaderSize ||
      h.data_offset % kAlignment != 0 || h.data_offset < h.model_offset + h.model_size ||
      h.data_offset > size || h.data_size != size - h.data_offset) {
    fail("inconsistent section table (model at " + std::to_string(h.model_offset) + " + " +
         std::to_string(h.model_size) + ", data at " + std::to_string(h.data_offset) + " + " +
         std::to_string(h.data_size) + ", file " + std::to_string(size) + " bytes)");
  }
  return h;
}

}  // namespace

struct Model::Impl {
  std::unique_ptr<Bytes> bytes;
  std::vector<Tensor> tensors;
  std::vector<std::unique_ptr<Op>> ops;
  std::vector<int> graph_inputs, graph_outputs;
  std::vector<TensorSpec> input_specs, output_specs;
  std::vector<LayerInfo> layers;
  std::vector<int> root;  // per tensor: the tensor whose bytes it uses (itself or an alias)
  std::vector<int> input_aliases;  // tensors sharing a graph input's bytes (reshapes of it)
  std::vector<size_t> offsets;     // per root activation: arena offset
  std::vector<uint8_t> arena_mem;
  DecodedStorage decoded;  // bytes of the decoded (packed) weight tensors
  uint8_t* arena = nullptr;
  size_t arena_size = 0, activation_size = 0, weight_size = 0;
  std::string producer;
  std::vector<std::pair<std::string, std::string>> metadata;
  int threads = 1;
  std::mutex mu;
  RunContext ctx;

  void load(std::unique_ptr<Bytes> b);
  void load_tensors(const eom::Model& m, const uint8_t* data, uint64_t data_size);
  void load_operators(const eom::Model& m);
  void plan_arena();
  void bind(const std::vector<const void*>& in, const std::vector<void*>& out);
  void finish(const std::vector<void*>& out);
  // Copies each operator's kernel path into layers (on demand: not per run).
  void sync_layers();
};

void Model::Impl::load(std::unique_ptr<Bytes> b) {
  bytes = std::move(b);
  const uint8_t* p = bytes->data();
  const size_t size = bytes->size();
  const Header h = check_header(p, size);
  const uint8_t* fb = p + h.model_offset;
  if (h.model_size >= (uint64_t{1} << 31) - 1) fail("the model table is larger than 2 GiB");
  flatbuffers::Verifier::Options vopts;
  vopts.max_depth = 64;
  vopts.max_tables = 1u << 22;
  vopts.check_alignment = true;
  flatbuffers::Verifier verifier(fb, static_cast<size_t>(h.model_size), vopts);
  if (!eom::VerifyModelBuffer(verifier)) {
    fail(
        "the model table does not verify as an eom.Model FlatBuffer (corrupted or not written "
        "by optimizer.export_native)");
  }
  const eom::Model& m = *eom::GetModel(fb);
  if (m.producer()) producer = m.producer()->str();
  if (m.metadata()) {
    for (const auto* kv : *m.metadata()) {
      metadata.emplace_back(kv->key() ? kv->key()->str() : "",
                            kv->value() ? kv->value()->str() : "");
    }
  }
  load_tensors(m, p + h.data_offset, h.data_size);
  decode_packed_weights(m, tensors, &decoded);
  load_operators(m);
  plan_arena();
}

void Model::Impl::load_tensors(const eom::Model& m, const uint8_t* data, uint64_t data_size) {
  const auto* bufs = m.buffers();
  const size_t nbuf = bufs ? bufs->size() : 0;
  // Copied out: the verifier checks the vector's 4-byte alignment only, and the structs hold
  // 8-byte fields (a misaligned read is undefined behaviour, and faults on some ARM cores).
  std::vector<eom::BufferRef> refs(nbuf);
  if (nbuf) std::memcpy(refs.data(), bufs->Data(), nbuf * sizeof(eom::BufferRef));
  for (size_t i = 0; i < nbuf; ++i) {
    const eom::BufferRef* br = &refs[i];
    // Format 1.3: a buffer under 64 bytes may sit on a 16-byte boundary.
    const uint64_t align = br->size() < kAlignment ? kSmallAlignment : kAlignment;
    if (br->offset() % align != 0) {
      fail("buffer " + std::to_string(i) + " at offset " + std::to_string(br->offset()) +
           " is not " + std::to_string(align) + "-byte aligned");
    }
    if (br->offset() > data_size || br->size() > data_size - br->offset()) {
      fail("buffer " + std::to_string(i) + " [" + std::to_string(br->offset()) + ", +" +
           std::to_string(br->size()) + ") lies outside the " + std::to_string(data_size) +
           "-byte data section");
    }
  }
  if (!m.tensors() || m.tensors()->size() == 0) fail("the model has no tensors");
  const size_t nt = m.tensors()->size();
  if (nt > (1u << 24)) fail("too many tensors (" + std::to_string(nt) + ")");
  tensors.resize(nt);
  for (size_t i = 0; i < nt; ++i) {
    const eom::Tensor* t = m.tensors()->Get(static_cast<flatbuffers::uoffset_t>(i));
    Tensor& r = tensors[i];
    r.name = file_string(t->name(), "t" + std::to_string(i));
    const std::string where = "tensor " + std::to_string(i) + " (`" + r.name.substr(0, 200) + "`)";
    if (t->dtype() < eom::DType_MIN || t->dtype() > eom::DType_MAX) {
      fail(where + ": unknown dtype " + std::to_string(static_cast<int>(t->dtype())));
    }
    r.dtype = static_cast<DType>(t->dtype());
    if (!t->shape() || t->shape()->size() < 1 || t->shape()->size() > kMaxRank) {
      fail(where + ": rank must be 1 to " + std::to_string(kMaxRank));
    }
    uint64_t elems = 1;
    for (auto d : *t->shape()) {
      if (d < 1) fail(where + ": dimension " + std::to_string(d) + " must be >= 1");
      r.shape.push_back(d);
      elems *= static_cast<uint64_t>(d);
      if (elems > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) {
        fail(where + ": more than 2^31 - 1 elements");
      }
    }
    r.elements = static_cast<size_t>(elems);
    r.bytes = r.elements * dtype_size(r.dtype);
    if (const auto* q = t->quantization()) {
      const size_t ns = q->scale() ? q->scale()->size() : 0;
      const size_t nz = q->zero_point() ? q->zero_point()->size() : 0;
      // Format 1.3: one zero point may stand for every channel.
      if (ns == 0 || (nz != ns && nz != 1)) {
        fail(where + ": quantization needs scales and as many zero points, or one (got " +
             std::to_string(ns) + " and " + std::to_string(nz) + ")");
      }
      if (ns > 1) {
        const int axis = q->axis();
        if (axis < 0 || axis >= static_cast<int>(r.shape.size()) ||
            static_cast<int64_t>(ns) != r.shape[axis]) {
          fail(where + ": " + std::to_string(ns) + " per-channel scales do not match axis " +
               std::to_string(axis) + " of " + shape_str(r.shape));
        }
      }
      for (size_t j = 0; j < ns; ++j) {
        const float s = q->scale()->Get(static_cast<flatbuffers::uoffset_t>(j));
        if (!(s > 0.0f) || !std::isfinite(s)) fail(where + ": scale must be finite and > 0");
      }
      r.scale = q->scale()->Get(0);
      r.zero_point = q->zero_point()->Get(0);
      r.quant_count = static_cast<int>(ns);
      for (size_t j = 0; j < nz; ++j)
        r.zero_points_zero &= q->zero_point()->Get(static_cast<flatbuffers::uoffset_t>(j)) == 0;
    }
    const int buf = t->buffer();
    if (t->decoded()) {
      if (buf != -1)
        fail(where + ": a decoded tensor has no buffer (got " + std::to_string(buf) + ")");
      if (r.dtype != DType::kS8 && r.dtype != DType::kS32)
        fail(where + ": a decoded tensor must be int8 (values) or int32 (row_ptr, col_idx)");
    }
    if (buf >= 0) {
      if (static_cast<size_t>(buf) >= nbuf) {
        fail(where + ": buffer index " + std::to_string(buf) + " out of range [0, " +
             std::to_string(nbuf) + ")");
      }
      const eom::BufferRef* br = &refs[buf];
      if (br->size() != r.bytes) {
        fail(where + ": buffer " + std::to_string(buf) + " holds " + std::to_string(br->size()) +
             " bytes, the shape " + shape_str(r.shape) + " of " + dtype_name(r.dtype) + " needs " +
             std::to_string(r.bytes));
      }
      r.constant = data + br->offset();
      weight_size += r.bytes;
    } else if (buf != -1) {
      fail(where + ": buffer index " + std::to_string(buf) + " must be >= 0 or -1 (activation)");
    }
    if (t->decoded()) {
      // Filled from a packed weight before the operators are built (decode_packed_weights).
      r.decoded = true;
    } else if (r.dtype == DType::kS8 && buf == -1) {
      // int8 activations: one scale and one zero point in the int8 range (per tensor).
      if (r.quant_count != 1) {
        fail(where + ": an int8 activation needs per-tensor quantization (one scale and one " +
             "zero point), got " + std::to_string(r.quant_count) + " scales");
      }
      if (r.zero_point < -128 || r.zero_point > 127) {
        fail(where + ": zero point " + std::to_string(r.zero_point) + " out of the int8 range");
      }
    }
  }
  auto read_io = [&](const flatbuffers::Vector<int32_t>* v, std::vector<int>* out,
                     const char* what) {
    if (!v || v->size() == 0) fail(std::string("the model declares no ") + what);
    for (auto t : *v) {
      if (t < 0 || static_cast<size_t>(t) >= nt) {
        fail(std::string(what) + " index " + std::to_string(t) + " out of range");
      }
      if (std::find(out->begin(), out->end(), t) != out->end()) {
        fail(std::string(what) + " list repeats tensor " + std::to_string(t));
      }
      if (tensors[t].constant || tensors[t].decoded)
        fail(std::string(what) + " tensor `" + tensors[t].name + "` is a constant");
      out->push_back(t);
    }
  };
  read_io(m.inputs(), &graph_inputs, "graph inputs");
  read_io(m.outputs(), &graph_outputs, "graph outputs");
  for (int t : graph_inputs) tensors[t].is_input = true;
  auto spec = [&](int t) {
    TensorSpec s;
    s.name = tensors[t].name;
    s.shape = tensors[t].shape;
    s.dtype = tensors[t].dtype;
    s.scale = tensors[t].scale;
    s.zero_point = tensors[t].zero_point;
    return s;
  };
  for (int t : graph_inputs) input_specs.push_back(spec(t));
  for (int t : graph_outputs) output_specs.push_back(spec(t));
}

void Model::Impl::load_operators(const eom::Model& m) {
  if (!m.operators() || m.operators()->size() == 0) fail("the model has no operators");
  const size_t nops = m.operators()->size();
  root.resize(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) root[t] = static_cast<int>(t);
  for (size_t i = 0; i < nops; ++i) {
    const eom::Operator& fop = *m.operators()->Get(static_cast<flatbuffers::uoffset_t>(i));
    const char* type = eom::EnumNameOpType(fop.type());
    if (!type || !*type) type = "unknown type";
    Build b(fop, static_cast<int>(i), tensors, type);
    for (int t : b.inputs()) {
      const Tensor& x = tensors[t];
      b.require(x.constant || x.is_input || x.producer >= 0, "reads tensor ", t, " (`", x.name,
                "`) before any operator writes it");
    }
    for (int t : b.outputs()) {
      const Tensor& y = tensors[t];
      b.require(!y.constant && !y.is_input, "writes tensor ", t, " (`", y.name,
                "`), a constant or graph input");
      b.require(y.producer < 0, "writes tensor ", t, " (`", y.name, "`) that operator ", y.producer,
                " already writes");
    }
    b.require(b.num_outputs() >= 1, "has no outputs");
    std::unique_ptr<Op> op = fop.type() == eom::OpType_GATHER ? build_gather_op(b)
                             : is_s8_op(b)                    ? build_s8_op(b)
                                                              : build_f32_op(b);
    op->inputs = b.inputs();
    op->outputs = b.outputs();
    for (int t : b.outputs()) tensors[t].producer = static_cast<int>(i);
    if (op->aliases_input()) root[op->outputs[0]] = root[op->inputs[0]];
    weight_size += inline_weight_bytes(fop.weight());  // format 1.5: bytes in the table
    op->info.name = file_string(fop.name(), "");
    layers.push_back(op->info);
    ops.push_back(std::move(op));
  }
  for (int t : graph_outputs) {
    if (!tensors[t].is_input && tensors[t].producer < 0) {
      fail("graph output `" + tensors[t].name + "` is written by no operator");
    }
  }
}

void Model::Impl::plan_arena() {
  // Liveness of each root activation: [the operator that writes it, the last that reads it or
  // one of its aliases]; graph outputs live to the end (they are copied out after the last op).
  const int nops = static_cast<int>(ops.size());
  const size_t nt = tensors.size();
  std::vector<int> first(nt, -1), last(nt, -1);
  for (int i = 0; i < nops; ++i) {
    for (int t : ops[i]->outputs) {
      const int r = root[t];
      if (r == t) first[r] = i;
      last[r] = std::max(last[r], i);
    }
    for (int t : ops[i]->inputs) last[root[t]] = std::max(last[root[t]], i);
  }
  for (int t : graph_outputs) last[root[t]] = nops;
  struct Block {
    int t;
    size_t size;
    int first, last;
    size_t offset;
  };
  std::vector<Block> blocks;
  uint64_t total = 0;
  for (size_t t = 0; t < nt; ++t) {
    if (root[t] != static_cast<int>(t) || tensors[t].constant || tensors[t].is_input ||
        first[t] < 0)
      continue;
    const size_t size = (tensors[t].bytes + kAlignment - 1) / kAlignment * kAlignment;
    blocks.push_back({static_cast<int>(t), size, first[t], std::max(last[t], first[t]), 0});
    total += size;
    if (total > kMaxArena) {
      fail("activations need more than " + std::to_string(kMaxArena >> 20) +
           " MiB (a batch size or shape in the file is far too large)");
    }
  }
  activation_size = static_cast<size_t>(total);
  // Greedy by size (TFLite's arena planner): each block goes at the lowest offset that no
  // block alive at the same time occupies.
  std::vector<size_t> order(blocks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return blocks[a].size > blocks[b].size; });
  std::vector<size_t> placed;
  size_t arena_end = 0;
  for (size_t bi : order) {
    Block& blk = blocks[bi];
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t pj : placed) {
      const Block& o = blocks[pj];
      if (o.first <= blk.last && blk.first <= o.last)
        busy.emplace_back(o.offset, o.offset + o.size);
    }
    std::sort(busy.begin(), busy.end());
    size_t at = 0;
    for (const auto& iv : busy) {
      if (iv.first >= at + blk.size) break;
      at = std::max(at, iv.second);
    }
    blk.offset = at;
    arena_end = std::max(arena_end, at + blk.size);
    placed.push_back(bi);
  }
  arena_size = arena_end;
  offsets.assign(nt, 0);
  for (const Block& blk : blocks) offsets[blk.t] = blk.offset;
  try {
    arena_mem.resize(arena_size + kAlignment);
  } catch (const std::bad_alloc&) {
    fail("cannot allocate " + std::to_string(arena_size) + " bytes of activation memory");
  }
  arena = arena_mem.data() +
          (kAlignment - reinterpret_cast<uintptr_t>(arena_mem.data()) % kAlignment) % kAlignment;
  // Every pointer but those into the caller's inputs is fixed from now on: bind() sets only the
  // graph inputs and their aliases (no per-run walk over all tensors).
  ctx.data.assign(nt, nullptr);
  for (size_t t = 0; t < nt; ++t) {
    const Tensor& x = tensors[t];
    if (x.constant) {
      ctx.data[t] = const_cast<uint8_t*>(x.constant);
    } else if (tensors[root[t]].is_input) {
      if (!x.is_input) input_aliases.push_back(static_cast<int>(t));
    } else {
      ctx.data[t] = arena + offsets[root[t]];
    }
  }
}

void Model::Impl::bind(const std::vector<const void*>& in, const std::vector<void*>& out) {
  if (in.size() != graph_inputs.size()) {
    throw std::invalid_argument("edgeopt model: run() got " + std::to_string(in.size()) +
                                " inputs, the model has " + std::to_string(graph_inputs.size()));
  }
  if (out.size() != graph_outputs.size()) {
    throw std::invalid_argument("edgeopt model: run() got " + std::to_string(out.size()) +
                                " outputs, the model has " + std::to_string(graph_outputs.size()));
  }
  for (size_t i = 0; i < in.size(); ++i) {
    ctx.data[graph_inputs[i]] = static_cast<uint8_t*>(const_cast<void*>(in[i]));
  }
  for (int t : input_aliases) ctx.data[t] = ctx.data[root[t]];
  ctx.threads = threads;
}

void Model::Impl::finish(const std::vector<void*>& out) {
  for (size_t i = 0; i < out.size(); ++i) {
    const int t = graph_outputs[i];
    std::memmove(out[i], ctx.data[t], tensors[t].bytes);
  }
}

void Model::Impl::sync_layers() {
  for (size_t i = 0; i < ops.size(); ++i) {
    if (layers[i].kernel != ops[i]->info.kernel) layers[i].kernel = ops[i]->info.kernel;
  }
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->load(Bytes::map_file(path));
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

std::unique_ptr<Model> Model::from_bytes(const void* data, size_t size) {
  auto impl = std::make_unique<Impl>();
  impl->load(Bytes::copy(data, size));
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

const std::vector<TensorSpec>& Model::inputs() const {
  return impl_->input_specs;
}
const std::vector<TensorSpec>& Model::outputs() const {
  return impl_->output_specs;
}
int Model::num_threads() const {
  return impl_->threads;
}

void Model::set_num_threads(int threads) {
  if (threads < 1 || threads > 256) {
    throw std::invalid_argument("edgeopt model: num_threads must be in [1, 256], got " +
                                std::to_string(threads));
  }
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->threads = threads;
}

void Model::run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->bind(inputs, outputs);
  for (auto& op : impl_->ops) op->run(impl_->ctx);
  impl_->finish(outputs);
}

void Model::run_profiled(const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                         std::vector<double>* layer_seconds) {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->bind(inputs, outputs);
  layer_seconds->assign(impl_->ops.size(), 0.0);
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  for (size_t i = 0; i < impl_->ops.size(); ++i) {
    impl_->ops[i]->run(impl_->ctx);
    const auto t1 = clock::now();
    (*layer_seconds)[i] = std::chrono::duration<double>(t1 - t0).count();
    t0 = t1;
  }
  impl_->finish(outputs);
}

const std::vector<LayerInfo>& Model::layers() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  impl_->sync_layers();
  return impl_->layers;
}
size_t Model::arena_bytes() const {
  return impl_->arena_size;
}
size_t Model::activation_bytes() const {
  return impl_->activation_size;
}
size_t Model::weight_bytes() const {
  return impl_->weight_size;
}
size_t Model::file_bytes() const {
  return impl_->bytes->size();
}
const std::string& Model::producer() const {
  return impl_->producer;
}
const std::vector<std::pair<std::string, std::string>>& Model::metadata() const {
  return impl_->metadata;
}

}  // namespace runtime
}  // namespace edgeopt
