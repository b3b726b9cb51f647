// Containers for files compiled with ISA flags: everything here has internal linkage.
//
// A std::vector<int>::resize instantiated in an AVX-512 file is a weak symbol that the linker may
// pick for the whole binary, generic code included, and an older CPU then dies with SIGILL.
// Files built with ISA flags use these instead (tests/test_isa_symbols.py checks that no weak
// code symbol is shared between objects built with different flags).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

namespace edgeopt {
namespace {

// A growable, 64-byte aligned buffer (thread-local scratch): grows, never shrinks.
template <typename T>
class LocalBuf {
 public:
  LocalBuf() = default;
  LocalBuf(const LocalBuf&) = delete;
  LocalBuf& operator=(const LocalBuf&) = delete;
  ~LocalBuf() { std::free(p_); }
  T* get(size_t n) {
    if (n > cap_) {
      std::free(p_);
      const size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
      p_ = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (p_ == nullptr) throw std::bad_alloc();
      cap_ = n;
    }
    return p_;
  }

 private:
  T* p_ = nullptr;
  size_t cap_ = 0;
};

// The few std::vector operations the packers use, for trivially copyable T.
template <typename T>
class LocalVec {
 public:
  LocalVec() = default;
  explicit LocalVec(size_t n, T v = T()) { assign(n, v); }
  LocalVec(const LocalVec&) = delete;
  LocalVec& operator=(const LocalVec&) = delete;
  ~LocalVec() { std::free(p_); }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* data() { return p_; }
  const T* data() const { return p_; }
  T* begin() { return p_; }
  T* end() { return p_ + n_; }
  const T* begin() const { return p_; }
  const T* end() const { return p_ + n_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }
  T& back() { return p_[n_ - 1]; }
  void clear() { n_ = 0; }
  void reserve(size_t n) {
    if (n <= cap_) return;
    T* q = static_cast<T*>(std::malloc(n * sizeof(T)));
    if (q == nullptr) throw std::bad_alloc();
    if (n_) std::memcpy(q, p_, n_ * sizeof(T));
    std::free(p_);
    p_ = q;
    cap_ = n;
  }
  void resize(size_t n, T v = T()) {
    reserve(n);
    for (size_t i = n_; i < n; ++i) p_[i] = v;
    n_ = n;
  }
  void assign(size_t n, T v) {
    n_ = 0;
    resize(n, v);
  }
  void push_back(T v) {
    if (n_ == cap_) reserve(cap_ ? 2 * cap_ : 16);
    p_[n_++] = v;
  }
  void append(const T* first, const T* last) {
    reserve(n_ + static_cast<size_t>(last - first));
    for (; first != last; ++first) p_[n_++] = *first;
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// Ascending heapsort (no recursion, no std::sort instantiation).
template <typename T>
void local_sort(T* first, T* last) {
  const ptrdiff_t n = last - first;
  auto sift = [first](ptrdiff_t root, ptrdiff_t end) {
    for (;;) {
      ptrdiff_t child = 2 * root + 1;
      if (child >= end) return;
      if (child + 1 < end && first[child] < first[child + 1]) ++child;
      if (!(first[root] < first[child])) return;
      T t = first[root];
      first[root] = first[child];
      first[child] = t;
      root = child;
    }
  };
  for (ptrdiff_t i = n / 2 - 1; i >= 0; --i) sift(i, n);
  for (ptrdiff_t end = n - 1; end > 0; --end) {
    T t = first[0];
    first[0] = first[end];
    first[end] = t;
    sift(0, end);
  }
}

}  // namespace
}  // namespace edgeopt
