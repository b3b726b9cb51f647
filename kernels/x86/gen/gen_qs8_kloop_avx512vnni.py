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
BZ = [28, 30, 31]  # activation broadcasts (a ^ 0x80); zmm29 holds the 0x80 bytes
U = {1: int(os.environ.get("U1", 4)), 2: int(os.environ.get("U2", 2)), 3: int(os.environ.get("U3", 1)), 4: 1, 5: 1, 6: 1}
# Software prefetch (PF bytes ahead, one PFHINT per PFSTEP bytes, for MR <= PFMR): off by default
# since run() alternates the panel order per call (see the kernel file); measured slower with it.
PF = int(os.environ.get("PF", 0))
PFMR = int(os.environ.get("PFMR", 1))
PFHINT = os.environ.get("PFHINT", "prefetcht0")
PFSTEP = int(os.environ.get("PFSTEP", 64))
out = []
for mr in range(1, 7):
    u = U[mr]
    def acc(s, r, v): return 4 * (s * mr + r) + v
    lines = []
    L = lambda s: lines.append('"' + s + '\\n\\t"')
    nacc = 4 * mr * u
    # set 0 starts at the column values ci[v]; the other sets at zero
    for v in range(4): L(f"vmovdqa64 {64*v}(%[ci]), %%zmm{acc(0,0,v)}")
    for r in range(1, mr):
        for v in range(4): L(f"vmovdqa64 %%zmm{acc(0,0,v)}, %%zmm{acc(0,r,v)}")
    L("mov $0x80808080, %k[ci]"); L("vpbroadcastd %k[ci], %%zmm29")
    for i in range(4 * mr, nacc): L(f"vpxord %%zmm{i}, %%zmm{i}, %%zmm{i}")
    L("test %[n], %[n]"); L("jz 2f")
    L(".p2align 5")
    L("1:")
    if PF and mr <= PFMR:
        for q in range(0, 256*u, PFSTEP): L(f"{PFHINT} {PF+q}(%[w])")
    for s in range(u):
        for v in range(4): L(f"vmovdqa64 {256*s+64*v}(%[w]), %%zmm{24+v if s%2==0 else 20+v}" if nacc <= 20 else f"vmovdqa64 {256*s+64*v}(%[w]), %%zmm{24+v}")
        for r in range(mr):
            bz = BZ[(r + s) % 3]
            L(f"vpxord {rowmem(r, 4*s)}%{{1to16%}}, %%zmm29, %%zmm{bz}")
            for v in range(4):
                breg = (24+v if s%2==0 else 20+v) if nacc <= 20 else 24+v
                L(f"vpdpbusd %%zmm{breg}, %%zmm{bz}, %%zmm{acc(s,r,v)}")
    L(f"add ${256*u}, %[w]"); L(f"add ${4*u}, %[a0]"); L(f"add ${4*u}, %[a3]")
    L("dec %[n]"); L("jnz 1b")
    L("2:")
    for s in range(1, u):
        for r in range(mr):
            for v in range(4): L(f"vpaddd %%zmm{acc(s,r,v)}, %%zmm{acc(0,r,v)}, %%zmm{acc(0,r,v)}")
    def one_group(mem):
        for v in range(4): L(f"vmovdqa64 {64*v}(%[w]), %%zmm{24+v}")
        for r in range(mr):
            bz = BZ[r % 3]
            mem(r, bz)
            for v in range(4): L(f"vpdpbusd %%zmm{24+v}, %%zmm{bz}, %%zmm{acc(0,r,v)}")
    if u > 1:  # leftover whole groups, one at a time
        L("test %[nl], %[nl]"); L("jz 4f")
        L("3:")
        one_group(lambda r, bz: L(f"vpxord {rowmem(r, 0)}%{{1to16%}}, %%zmm29, %%zmm{bz}"))
        L("add $256, %[w]"); L("add $4, %[a0]"); L("add $4, %[a3]")
        L("dec %[nl]"); L("jnz 3b")
        L("4:")
    # last partial group of K: byte-masked loads (k1), nothing past the row end is read
    L("kmovw %k[mask], %%k1"); L("ktestw %%k1, %%k1"); L("jz 5f")
    def masked(r, bz):
        L(f"vmovdqu8 {rowmem(r, 0)}, %%xmm{bz}%{{%%k1%}}%{{z%}}")
        L(f"vpbroadcastd %%xmm{bz}, %%zmm{bz}")
        L(f"vpxord %%zmm29, %%zmm{bz}, %%zmm{bz}")
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
                          uint32_t mask, const int32_t* ci, int32_t* out, size_t ldo) {{
  const int8_t* a3 = a0 + ({min(mr,3)} * lda);
  asm volatile(
      {body}
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [ci] "+r"(ci){', [nl] "+r"(nl)' if u > 1 else ''}
      : [lda] "r"(lda), [out] "r"(out), [ldo] "r"(ldo), [mask] "r"(mask){'' if u > 1 else ', [nl] "r"(nl)'}
      : {clob}, "k1", "memory", "cc");
}}
""")
# kloop6e: the MR = 6 K loop for linear_s8 with the previous tile's output stage folded in. Each of
# the first `ne` (0 or 24) loop iterations also requantizes one 16-output vector i of the previous
# tile (row i / 4, vector i % 4; int32 accumulators at accp, Epi constants at epi, int8 rows at
# outp), so its ~17 instructions interleave with the vpdpbusd stream in program order; iterations
# left over when K has fewer than ne groups run after the K loop. Broadcasts use zmm28 only (zmm29: 0x80) and
# the output stage zmm30-31, k2-k4. Fixed arguments live in a KArgs block (ka, see the kernel).
EPI = int(os.environ.get("EPI", 1))
def kloop6e():
    mr = 6
    lines = []
    L = lambda s: lines.append('"' + s + '\\n\\t"')
    def acc(r, v): return 4 * r + v
    L("mov 0(%[ka]), %[tmp]")  # ci
    for v in range(4): L(f"vmovdqa64 {64*v}(%[tmp]), %%zmm{acc(0,v)}")
    for r in range(1, mr):
        for v in range(4): L(f"vmovdqa64 %%zmm{acc(0,v)}, %%zmm{acc(r,v)}")
    L("mov $0x80808080, %k[tmp]"); L("vpbroadcastd %k[tmp], %%zmm29")
    L("mov $0xAAAA, %k[tmp]"); L("kmovw %k[tmp], %%k4")
    L("xor %k[vi], %k[vi]")
    def group(lines_mid=None):
        for v in range(4): L(f"vmovdqa64 {64*v}(%[w]), %%zmm{24+v}")
        for r in range(mr):
            bz = 28
            L(f"vpxord {rowmem(r, 0)}%{{1to16%}}, %%zmm29, %%zmm{bz}")
            for v in range(4): L(f"vpdpbusd %%zmm{24+v}, %%zmm{bz}, %%zmm{acc(r,v)}")
            if r == 2 and lines_mid: lines_mid()
    def epi(label):
        E = lambda off: f"{off}(%[epi],%[vi],4)"
        L("vmovdqa64 (%[accp]), %%zmm30")
        L("vpsrlq $32, (%[accp]), %%zmm31")
        L(f"vpmuldq {E(0)}, %%zmm30, %%zmm30")
        L(f"vpmuldq {E(256)}, %%zmm31, %%zmm31")
        L("vpmovq2m %%zmm30, %%k2")
        L("vpmovq2m %%zmm31, %%k3")
        L(f"vpaddq {E(512)}, %%zmm30, %%zmm30")
        L(f"vpaddq {E(768)}, %%zmm31, %%zmm31")
        L("vpsubq 24(%[ka])%{1to8%}, %%zmm30, %%zmm30%{%%k2%}")
        L("vpsubq 24(%[ka])%{1to8%}, %%zmm31, %%zmm31%{%%k3%}")
        L(f"vpsravq {E(1024)}, %%zmm30, %%zmm30")
        L(f"vpsravq {E(1280)}, %%zmm31, %%zmm31")
        L("vmovdqa32 %%zmm31, %%zmm30%{%%k4%}")
        L("vpmaxsd 32(%[ka])%{1to16%}, %%zmm30, %%zmm30")
        L("vpminsd 36(%[ka])%{1to16%}, %%zmm30, %%zmm30")
        L("vpmovdb %%zmm30, (%[outp],%[vi],1)")
        L("add $64, %[accp]")
        L("add $16, %[vi]")
        L("cmp $64, %[vi]")
        L(f"jne {label}f")
        L("xor %k[vi], %k[vi]")
        L("add 16(%[ka]), %[outp]")
        L(f"{label}:")
    adv = lambda: (L("add $256, %[w]"), L("add $4, %[a0]"), L("add $4, %[a3]"))
    L("test %[n], %[n]"); L("jz 7f")
    L("test %[ne], %[ne]"); L("jz 1f")
    L(".p2align 5")
    L("8:")
    group(lambda: epi(11))
    adv()
    L("dec %[ne]"); L("jz 9f")
    L("dec %[n]"); L("jnz 8b")
    L("jmp 7f")
    L("9:")
    L("dec %[n]"); L("jz 2f")
    L(".p2align 5")
    L("1:")
    group()
    adv()
    L("dec %[n]"); L("jnz 1b")
    L("jmp 2f")
    L("7:")
    L("test %[ne], %[ne]"); L("jz 2f")
    L("10:")
    epi(12)
    L("dec %[ne]"); L("jnz 10b")
    L("2:")
    L("kmovw 8(%[ka]), %%k1"); L("ktestw %%k1, %%k1"); L("jz 5f")
    for v in range(4): L(f"vmovdqa64 {64*v}(%[w]), %%zmm{24+v}")
    for r in range(mr):
        bz = 28
        L(f"vmovdqu8 {rowmem(r, 0)}, %%xmm{bz}%{{%%k1%}}%{{z%}}")
        L(f"vpbroadcastd %%xmm{bz}, %%zmm{bz}")
        L(f"vpxord %%zmm29, %%zmm{bz}, %%zmm{bz}")
        for v in range(4): L(f"vpdpbusd %%zmm{24+v}, %%zmm{bz}, %%zmm{acc(r,v)}")
    L("5:")
    L("mov 40(%[ka]), %[tmp]")  # this tile's int32 accumulator buffer
    for r in range(mr):
        for v in range(4): L(f"vmovdqa32 %%zmm{acc(r,v)}, {256*r+64*v}(%[tmp])")
    clob = ", ".join(f'"xmm{i}"' for i in range(32))
    body = "\n      ".join(lines)
    return f"""struct Epi;
struct KArgs;
// ka: {{ci, mask (u32) at 8, ldo at 16, 2^31 (i64) at 24, qmin and qmax (i32) at 32, 36, this
// tile's accumulator buffer at 40}}.
EO_INLINE void kloop6e(const int8_t* a0, size_t lda, const uint8_t* w, long n, const KArgs* ka,
                       const int32_t* accp, const Epi* epi, int8_t* outp, long ne) {{
  const int8_t* a3 = a0 + 3 * lda;
  long vi, tmp;
  asm volatile(
      {body}
      : [w] "+r"(w), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n), [accp] "+r"(accp),
        [outp] "+r"(outp), [ne] "+r"(ne), [vi] "=&r"(vi), [tmp] "=&r"(tmp)
      : [lda] "r"(lda), [ka] "r"(ka), [epi] "r"(epi)
      : {clob}, "k1", "k2", "k3", "k4", "memory", "cc");
}}
"""

print("// Groups per asm loop iteration (accumulator sets summed at the end), by MR.")
print("constexpr int kUnroll[7] = {0, " + ", ".join(str(U[m]) for m in range(1, 7)) + "};")
print("template <int MR>\nvoid kloop(const int8_t* a0, size_t lda, const uint8_t* w, long n, long nl, uint32_t mask,\n           const int32_t* ci, int32_t* out, size_t ldo);")
print("\n".join(out))
if EPI:
    print(kloop6e())
