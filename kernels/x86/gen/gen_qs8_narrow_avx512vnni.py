#!/usr/bin/env python3
"""Generates the narrow-panel K loops (inline asm) of kernels/x86/qs8_gemm_avx512vnni.cc.

Replaces the text between the BEGIN/END GENERATED NARROW markers of that file. Register plan:
accumulator (r, v) = zmm(r*NV + v) (at most 16), weights zmm20/21, the activation broadcast
(a ^ 0x80) zmm28, the 0x80 bytes zmm29. Rows r = 0..7 are addressed from a0, a3 = a0 + 3*lda and
a6 = a0 + 6*lda with lda scaled by 1 or 2. The partial last k group (k % 4 bytes, mask in k1) is
read with byte-masked loads that never touch memory past a row's end.
Usage: gen_qs8_narrow_avx512vnni.py [path of qs8_gemm_avx512vnni.cc], then clang-format -i it.
"""

import sys

TILES = [(mr, nv) for nv in (1, 2) for mr in (8, 4, 2, 1)]


def arow(r):
    base = ("a0", "a3", "a6")[r // 3]
    rr = r % 3
    return f"(%[{base}])" if rr == 0 else f"(%[{base}],%[lda],{rr})"


def z(i):
    return f"%%zmm{i}"


def gen(mr, nv):
    acc = lambda r, v: r * nv + v  # noqa: E731
    ln = []
    for r in range(mr):
        for v in range(nv):
            ln.append(f"vmovdqa64 {64 * v}(%[ci]), {z(acc(r, v))}")
    ln += ["mov $0x80808080, %k[t]", f"vpbroadcastd %k[t], {z(29)}", "test %[n], %[n]", "jz 2f"]
    ln += [".p2align 5", "1:"]
    for v in range(nv):
        ln.append(f"vmovdqa64 {64 * v}(%[w]), {z(20 + v)}")
    for r in range(mr):
        ln.append(f"vpxord {arow(r)}%{{1to16%}}, {z(29)}, {z(28)}")
        for v in range(nv):
            ln.append(f"vpdpbusd {z(20 + v)}, {z(28)}, {z(acc(r, v))}")
    ln.append(f"add ${64 * nv}, %[w]")
    for b in ("a0", "a3", "a6")[: (mr + 2) // 3]:
        ln.append(f"add $4, %[{b}]")
    ln += ["dec %[n]", "jnz 1b", "2:", "test %k[mask], %k[mask]", "jz 3f", "kmovd %k[mask], %%k1"]
    for v in range(nv):
        ln.append(f"vmovdqa64 {64 * v}(%[w]), {z(20 + v)}")
    for r in range(mr):
        ln.append(f"vmovdqu8 {arow(r)}, %%xmm28%{{%%k1%}}%{{z%}}")
        ln.append(f"vpbroadcastd %%xmm28, {z(28)}")
        ln.append(f"vpxord {z(29)}, {z(28)}, {z(28)}")
        for v in range(nv):
            ln.append(f"vpdpbusd {z(20 + v)}, {z(28)}, {z(acc(r, v))}")
    ln.append("3:")
    for r in range(mr):
        for v in range(nv):
            ln.append(f"vmovdqa64 {z(acc(r, v))}, {256 * r + 64 * v}(%[out])")
    used = sorted({acc(r, v) for r in range(mr) for v in range(nv)} | {20 + v for v in range(nv)})
    used += [28, 29]
    body = "\n".join(f'      "{x}\\n\\t"' for x in ln)
    clob = ", ".join(f'"xmm{i}"' for i in used)
    return f"""template <>
EO_INLINE void narrow_kloop<{mr}, {nv}>(const int8_t* a0, size_t lda, const uint8_t* w, long n,
                                      uint32_t mask, const int32_t* ci, int32_t* out) {{
  const int8_t* a3 = a0 + 3 * lda;
  const int8_t* a6 = a0 + 6 * lda;
  long t;
  asm volatile(
{body}
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [a6] "+r"(a6), [n] "+r"(n), [t] "=&r"(t)
      : [lda] "r"(lda), [mask] "r"(mask), [ci] "r"(ci), [out] "r"(out)
      : {clob}, "k1", "memory", "cc");
}}
"""


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "kernels/x86/qs8_gemm_avx512vnni.cc"
    text = open(path).read()
    begin, end = "// BEGIN GENERATED NARROW\n", "// END GENERATED NARROW\n"
    i, j = text.index(begin) + len(begin), text.index(end)
    code = "\n".join(gen(mr, nv) for mr, nv in TILES)
    open(path, "w").write(text[:i] + code + text[j:])


if __name__ == "__main__":
    main()
