"""Generates the inline-asm K loops for the 6x16 AVX2 kernel (MR = 1..6).

Prints C++ (the kloop<MR> templates) to stdout; the output is pasted into the kernel file
between its kloop declaration and the next section. Settings come from the environment.
"""
# ruff: noqa
ROWMEM = ["(%[a0])", "(%[a0],%[lda],1)", "(%[a0],%[lda],2)", "(%[a3])", "(%[a3],%[lda],1)", "(%[a3],%[lda],2)"]
out = []
import os
PF = int(os.environ.get('PF', 1024))
U = {1: 4, 2: 4, 3: 1, 4: 1, 5: 1, 6: 1}
for mr in range(1, 7):
    lines = []
    L = lambda s: lines.append('"' + s + '\\n\\t"')
    nz = 2 * mr * (min(U[mr], 12 // (2 * mr)) if U[mr] > 1 else 1)
    for i in range(nz): L(f"vpxor %%ymm{i}, %%ymm{i}, %%ymm{i}")
    L("test %[n], %[n]"); L("jz 2f")
    L(".p2align 5")
    L("1:")
    u = U[mr]
    def pair(s, off_w, off_a):
        # set s accumulators: rows use ymm(2r+v) for s = 0, ymm(2*mr*s + 2r + v) otherwise
        L(f"vpmovsxbw {off_w}(%[w]), %%ymm12")
        L(f"vpmovsxbw {off_w + 16}(%[w]), %%ymm13")
        for r in range(mr):
            base = 2 * mr * s + 2 * r
            L(f"vpbroadcastd {off_a if off_a else ''}{ROWMEM[r]}, %%ymm14")
            L(f"vpmaddwd %%ymm14, %%ymm12, %%ymm15")
            L(f"vpaddd %%ymm15, %%ymm{base}, %%ymm{base}")
            L(f"vpmaddwd %%ymm14, %%ymm13, %%ymm15")
            L(f"vpaddd %%ymm15, %%ymm{base+1}, %%ymm{base+1}")
    for q in range(0, 32 * u, 64): L(f"prefetcht0 {PF + q}(%[w])")
    for s_ in range(u): pair(s_ % (12 // (2 * mr)) if u > 1 else 0, 32 * s_, 4 * s_)
    L(f"add ${32*u}, %[w]"); L(f"add ${4*u}, %[a0]"); L(f"add ${4*u}, %[a3]")
    L("dec %[n]"); L("jnz 1b")
    L("2:")
    if u > 1:
        nsets = min(u, 12 // (2 * mr))
        for s_ in range(1, nsets):
            for i in range(2 * mr): L(f"vpaddd %%ymm{2*mr*s_ + i}, %%ymm{i}, %%ymm{i}")
        L("test %[nl], %[nl]"); L("jz 4f")
        L("3:")
        pair(0, 0, 0)
        L("add $32, %[w]"); L("add $4, %[a0]"); L("add $4, %[a3]")
        L("dec %[nl]"); L("jnz 3b")
        L("4:")
    for r in range(mr):
        for v in range(2): L(f"vmovdqa %%ymm{2*r+v}, {64*r+32*v}(%[out])")
    clob = ", ".join(f'"xmm{i}"' for i in range(16))
    body = "\n      ".join(lines)
    out.append(f"""template <>
EO_INLINE void kloop<{mr}>(const int16_t* a0, size_t lda, const int8_t* w, long n, long nl,
                          int32_t* out) {{
  const int16_t* a3 = reinterpret_cast<const int16_t*>(reinterpret_cast<const char*>(a0) + {min(mr,3)} * lda);
  asm volatile(
      {body}
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [nl] "+r"(nl)
      : [lda] "r"(lda), [out] "r"(out)
      : {clob}, "memory", "cc");
}}
""")
print("// Pair groups per loop iteration by MR (leftover groups run one by one after the loop).")
print("constexpr int kUnroll[7] = {0, " + ", ".join(str(U[m]) for m in range(1, 7)) + "};")
print("template <int MR>\nvoid kloop(const int16_t* a0, size_t lda, const int8_t* w, long n, long nl, int32_t* out);")
print("\n".join(out))
