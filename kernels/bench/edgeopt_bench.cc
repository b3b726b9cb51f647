// edgeopt-bench: time a .eom model on the device, whole runs and per layer, with the kernel path
// each layer used. C++ only (no Python), so it cross-builds for the Pi and Android.
//
//   edgeopt-bench --model m.eom [--threads N] [--warmup W] [--runs R] [--json out.json]
//                 [--input x.bin] [--output y.bin]
//
// Whole-run latencies come from plain runs (no per-layer clock reads); the per-layer table from
// a second set of runs with a clock read between layers. Inputs are deterministic pseudo-random
// values unless --input gives the raw bytes (all inputs concatenated, as the model declares them);
// --output writes the outputs of the last run the same way. A run-to-run spread ((p90 - min) /
// median) above 5 % prints a warning: the device was busy or throttling, and the numbers are not
// to be trusted.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "edgeopt/path.h"
#include "edgeopt/runtime.h"

namespace rt = edgeopt::runtime;

namespace {

struct Args {
  std::string model, json, input, output;
  int threads = 1, warmup = 5, runs = 50;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "edgeopt-bench: %s\nusage: edgeopt-bench --model m.eom [--threads N] [--warmup W] "
               "[--runs R] [--json out.json] [--input x.bin] [--output y.bin]\n",
               msg);
  std::exit(2);
}

int to_int(const char* flag, const char* v, int lo, int hi) {
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (!*v || *end || x < lo || x > hi) {
    usage((std::string(flag) + " must be an integer in [" + std::to_string(lo) + ", " +
           std::to_string(hi) + "], got " + v)
              .c_str());
  }
  return static_cast<int>(x);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage((f + " needs a value").c_str());
      return argv[++i];
    };
    if (f == "--model")
      a.model = value();
    else if (f == "--json")
      a.json = value();
    else if (f == "--input")
      a.input = value();
    else if (f == "--output")
      a.output = value();
    else if (f == "--threads")
      a.threads = to_int("--threads", value(), 1, 256);
    else if (f == "--warmup")
      a.warmup = to_int("--warmup", value(), 0, 1000000);
    else if (f == "--runs")
      a.runs = to_int("--runs", value(), 1, 1000000);
    else if (f == "--help" || f == "-h")
      usage("time a .eom model");
    else
      usage(("unknown argument " + f).c_str());
  }
  if (a.model.empty()) usage("--model is required");
  return a;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  std::unique_ptr<rt::Model> model;
  try {
    model = rt::Model::load(args.model);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgeopt-bench: %s\n", e.what());
    return 1;
  }
  model->set_num_threads(args.threads);

  // Inputs.
  std::vector<std::vector<uint8_t>> in_bufs;
  size_t in_total = 0;
  for (const auto& s : model->inputs()) {
    in_bufs.emplace_back(s.bytes());
    in_total += s.bytes();
  }
  if (!args.input.empty()) {
    std::ifstream f(args.input, std::ios::binary);
    std::vector<char> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!f.good() && !f.eof()) usage(("cannot read " + args.input).c_str());
    if (raw.size() != in_total) {
      std::fprintf(stderr, "edgeopt-bench: %s holds %zu bytes, the model's inputs take %zu\n",
                   args.input.c_str(), raw.size(), in_total);
      return 1;
    }
    size_t off = 0;
    for (auto& b : in_bufs) {
      std::memcpy(b.data(), raw.data() + off, b.size());
      off += b.size();
    }
  } else {
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (size_t i = 0; i < in_bufs.size(); ++i) {
      const auto& s = model->inputs()[i];
      if (s.dtype == rt::DType::kF32) {
        auto* p = reinterpret_cast<float*>(in_bufs[i].data());
        for (size_t j = 0; j < s.elements(); ++j) p[j] = nd(rng);
      } else if (s.dtype == rt::DType::kS32) {
        std::fill(in_bufs[i].begin(), in_bufs[i].end(), 0);  // token ids: 0 is always valid
      } else {
        for (auto& b : in_bufs[i]) b = static_cast<uint8_t>(rng());
      }
    }
  }
  std::vector<const void*> ins;
  for (auto& b : in_bufs) ins.push_back(b.data());
  std::vector<std::vector<uint8_t>> out_bufs;
  std::vector<void*> outs;
  for (const auto& s : model->outputs()) out_bufs.emplace_back(s.bytes());
  for (auto& b : out_bufs) outs.push_back(b.data());

  using clock = std::chrono::steady_clock;
  std::vector<double> totals;
  const size_t nl = model->layers().size();
  std::vector<std::vector<double>> per_layer(nl);
  try {  // a run can refuse its input (e.g. a token id outside an embedding's table)
    for (int i = 0; i < args.warmup; ++i) model->run(ins, outs);
    for (int i = 0; i < args.runs; ++i) {
      const auto t0 = clock::now();
      model->run(ins, outs);
      totals.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    }
    std::vector<double> secs;
    for (int i = 0; i < args.runs; ++i) {
      model->run_profiled(ins, outs, &secs);
      for (size_t l = 0; l < nl; ++l) per_layer[l].push_back(secs[l]);
    }
    model->run(ins, outs);  // the outputs written below come from a plain run
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgeopt-bench: %s: %s\n", args.model.c_str(), e.what());
    return 1;
  }

  const double mn = *std::min_element(totals.begin(), totals.end());
  const double med = percentile(totals, 0.5), p90 = percentile(totals, 0.9);
  const double spread = med > 0 ? (p90 - mn) / med : 0.0;
  const bool noisy = spread > 0.05;
  const std::string cpu = edgeopt::cpu_description();

  size_t int8_layers = 0;  // layers on int8 kernels (s8_*, im2col+s8_*, quantize / dequantize)
  for (const auto& li : model->layers()) {
    const std::string& k = li.kernel;
    if (k.rfind("s8_", 0) == 0 || k.rfind("im2col+s8_", 0) == 0 || k.rfind("quantize", 0) == 0 ||
        k.rfind("dequantize", 0) == 0)
      ++int8_layers;
  }
  std::printf("model   %s (%zu bytes, %zu layers, %zu int8, arena %zu bytes)\n", args.model.c_str(),
              model->file_bytes(), nl, int8_layers, model->arena_bytes());
  std::printf("cpu     %s\nthreads %d, warmup %d, runs %d\n", cpu.c_str(), args.threads,
              args.warmup, args.runs);
  std::printf("latency min %.4f ms, median %.4f ms, p90 %.4f ms\n", mn * 1e3, med * 1e3, p90 * 1e3);
  if (noisy) {
    std::fprintf(stderr,
                 "warning: run-to-run spread %.1f %% exceeds 5 %% ((p90 - min) / median): the "
                 "device was busy or throttling; close other programs or raise --warmup\n",
                 spread * 100);
  }
  double layer_sum = 0;
  std::vector<double> layer_med(nl);
  for (size_t l = 0; l < nl; ++l) {
    layer_med[l] = percentile(per_layer[l], 0.5);
    layer_sum += layer_med[l];
  }
  std::printf("%-4s %-36s %-16s %10s %6s  %s\n", "#", "layer", "op", "median ms", "share",
              "kernel");
  for (size_t l = 0; l < nl; ++l) {
    const auto& li = model->layers()[l];
    std::printf("%-4zu %-36.36s %-16s %10.4f %5.1f%%  %s\n", l, li.name.c_str(), li.op.c_str(),
                layer_med[l] * 1e3, layer_sum > 0 ? 100.0 * layer_med[l] / layer_sum : 0.0,
                li.kernel.c_str());
  }

  if (!args.json.empty()) {
    std::ostringstream js;
    js.precision(9);
    js << "{\n  \"model\": " << json_str(args.model) << ",\n  \"cpu\": " << json_str(cpu)
       << ",\n  \"threads\": " << args.threads << ",\n  \"warmup\": " << args.warmup
       << ",\n  \"runs\": " << args.runs << ",\n  \"latency_ms\": {\"min\": " << mn * 1e3
       << ", \"median\": " << med * 1e3 << ", \"p90\": " << p90 * 1e3
       << "},\n  \"spread\": " << spread << ",\n  \"warning\": "
       << (noisy ? json_str("run-to-run spread above 5 %") : std::string("null"))
       << ",\n  \"file_bytes\": " << model->file_bytes()
       << ",\n  \"arena_bytes\": " << model->arena_bytes()
       << ",\n  \"weight_bytes\": " << model->weight_bytes() << ",\n  \"layers\": [";
    for (size_t l = 0; l < nl; ++l) {
      const auto& li = model->layers()[l];
      js << (l ? ",\n    " : "\n    ") << "{\"name\": " << json_str(li.name)
         << ", \"op\": " << json_str(li.op) << ", \"kernel\": " << json_str(li.kernel)
         << ", \"median_ms\": " << layer_med[l] * 1e3 << ", \"macs\": " << li.macs << "}";
    }
    js << "\n  ]\n}\n";
    std::ofstream f(args.json);
    f << js.str();
    if (!f) {
      std::fprintf(stderr, "edgeopt-bench: cannot write %s\n", args.json.c_str());
      return 1;
    }
  }
  if (!args.output.empty()) {
    std::ofstream f(args.output, std::ios::binary);
    for (const auto& b : out_bufs) f.write(reinterpret_cast<const char*>(b.data()), b.size());
    if (!f) {
      std::fprintf(stderr, "edgeopt-bench: cannot write %s\n", args.output.c_str());
      return 1;
    }
  }
  return 0;
}
