"""Generates the inline-asm K loops for the 6x64 VNNI kernel (MR = 1..6).

Prints C++ (the kloop<MR> templates) to stdout; the output is pasted into the kernel file
between its kloop declaration and the next section. Settings come from the environment.
"""
# ruff: noqa
ROWMEM = ["(%[a0])", "(%[a0],%[lda],1)", "(%[a0],%[lda],2)", "(%[a3])", "(%[a3],%[lda],1)", "(%[a3],%[lda],2)"]
def rowmem(r, off):
    m = ROWMEM[r]
    return (str(off) if off else "") + m
import os
U = {1: int(os.environ.get("U1", 4)), 2: int(os.environ.get("U2", 2)), 3: 1, 4: 1, 5: 1, 6: 1}
PF = int(os.environ.get("PF", 4096))
PFMR = int(os.environ.get("PFMR", 1))
out = []
for mr in range(1, 7):
    u = U[mr]
    def acc(s, r, v): return 4 * (s * mr + r) + v
    lines = []
    L = lambda s: lines.append('"' + s + '\\n\\t"')
    nacc = 4 * mr * u
    # set 0 starts at colinit[v] + rowinit[r]; the other sets at zero
    for v in range(4): L(f"vmovdqa64 {64*v}(%[ci]), %%zmm{24+v}")
    for r in range(mr):
        L(f"vpbroadcastd {4*r}(%[ri]), %%zmm28")
        for v in range(4): L(f"vpaddd %%zmm28, %%zmm{24+v}, %%zmm{acc(0,r,v)}")
    for i in range(4 * mr, nacc): L(f"vpxord %%zmm{i}, %%zmm{i}, %%zmm{i}")
    L("test %[n], %[n]"); L("jz 2f")
    L(".p2align 5")
    L("1:")
    if PF and mr <= PFMR:
        for q in range(0, 256*u, 64): L(f"prefetcht0 {PF+q}(%[w])")
    for s in range(u):
        for v in range(4): L(f"vmovdqa64 {256*s+64*v}(%[w]), %%zmm{24+v if s%2==0 else 20+v}" if nacc <= 20 else f"vmovdqa64 {256*s+64*v}(%[w]), %%zmm{24+v}")
        for r in range(mr):
            bz = 28 + (r + s) % 4
            L(f"vpbroadcastd {rowmem(r, 4*s)}, %%zmm{bz}")
            for v in range(4):
                breg = (24+v if s%2==0 else 20+v) if nacc <= 20 else 24+v
                L(f"vpdpbusd %%zmm{bz}, %%zmm{breg}, %%zmm{acc(s,r,v)}")
    L(f"add ${256*u}, %[w]"); L(f"add ${4*u}, %[a0]"); L(f"add ${4*u}, %[a3]")
    L("dec %[n]"); L("jnz 1b")
    L("2:")
    for s in range(1, u):
        for r in range(mr):
            for v in range(4): L(f"vpaddd %%zmm{acc(s,r,v)}, %%zmm{acc(0,r,v)}, %%zmm{acc(0,r,v)}")
    def one_group(mem):
        for v in range(4): L(f"vmovdqa64 {64*v}(%[w]), %%zmm{24+v}")
        for r in range(mr):
            bz = 28 + r % 4
            mem(r, bz)
            for v in range(4): L(f"vpdpbusd %%zmm{bz}, %%zmm{24+v}, %%zmm{acc(0,r,v)}")
    if u > 1:  # leftover whole groups, one at a time
        L("test %[nl], %[nl]"); L("jz 4f")
        L("3:")
        one_group(lambda r, bz: L(f"vpbroadcastd {rowmem(r, 0)}, %%zmm{bz}"))
        L("add $256, %[w]"); L("add $4, %[a0]"); L("add $4, %[a3]")
        L("dec %[nl]"); L("jnz 3b")
        L("4:")
    # last partial group of K: byte-masked loads (k1), nothing past the row end is read
    L("kmovw %k[mask], %%k1"); L("ktestw %%k1, %%k1"); L("jz 5f")
    def masked(r, bz):
        L(f"vmovdqu8 {rowmem(r, 0)}, %%xmm{bz}%{{%%k1%}}%{{z%}}")
        L(f"vpbroadcastd %%xmm{bz}, %%zmm{bz}")
    one_group(masked)
    L("5:")
    if mr > 3:
        L("lea (%[out],%[ldo],2), %[ci]"); L("add %[ldo], %[ci]")
    OUTMEM = ["(%[out])", "(%[out],%[ldo],1)", "(%[out],%[ldo],2)", "(%[ci])", "(%[ci],%[ldo],1)", "(%[ci],%[ldo],2)"]
    for r in range(mr):
        for v in range(4): L(f"vmovdqu32 %%zmm{acc(0,r,v)}, {64*v}{OUTMEM[r]}")
    clob = ", ".join(f'"xmm{i}"' for i in range(32))
    body = "\n      ".join(lines)
    out.append(f"""template <>
EO_INLINE void kloop<{mr}>(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl,
                          uint32_t mask, const int32_t* ri, const int32_t* ci, int32_t* out,
                          size_t ldo) {{
  const int8_t* a3 = a0 + ({min(mr,3)} * lda);
  asm volatile(
      {body}
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci){', [nl] "+r"(nl)' if u > 1 else ''}
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [ri] "r"(ri), [mask] "r"(mask){'' if u > 1 else ', [nl] "r"(nl)'}
      : {clob}, "k1", "memory", "cc");
}}
""")
print("// Groups per asm loop iteration (accumulator sets summed at the end), by MR.")
print("constexpr int kUnroll[7] = {0, " + ", ".join(str(U[m]) for m in range(1, 7)) + "};")
print("template <int MR>\nvoid kloop(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl, uint32_t mask,\n           const int32_t* ri, const int32_t* ci, int32_t* out, size_t ldo);")
print("\n".join(out))
