#!/usr/bin/env python3
"""Generates the K loops (inline asm) of kernels/x86/qs8_codebook_avx512vnni.cc.

Replaces the text between the BEGIN/END GENERATED markers of that file. Register plan:
accumulator (p, r, c) = zmm((p*MR + r)*4 + c); decoded weights zmm24-27; zmm28 = per-layer table
or per-channel index temp; zmm29 = index mask; activation broadcasts zmm30/31.
"""
import sys

TILES = [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1), (5, 1), (6, 1)]
PF = 2048  # MR = 1 software prefetch distance (bytes ahead in each panel stream)


def addr(p, off):
    if p == 0:
        return f"{off}(%[w])"
    if p == 1:
        return f"{off}(%[w],%[ps],1)"
    if p == 2:
        return f"{off}(%[w],%[ps],2)"
    return f"{off}(%[w3])"


def arow(r, ko):
    base = "a0" if r < 3 else "a3"
    rr = r % 3
    if rr == 0:
        return f"{ko}(%[{base}])"
    return f"{ko}(%[{base}],%[lda],{rr})"


def z(i):
    return f"%%zmm{i}"


def decode(bits, pc, p, lines):
    d = [24, 25, 26, 27]
    m = z(29)

    def shuf(c, idx_reg):
        if pc:
            lines.append(f"vmovdqa64 {p * 256 + c * 64}(%[tab]), {z(d[c])}")
            lines.append(f"vpshufb {z(idx_reg)}, {z(d[c])}, {z(d[c])}")
        else:
            lines.append(f"vpshufb {z(idx_reg)}, {z(28)}, {z(d[c])}")

    if bits == 4:
        for h in range(2):
            A = addr(p, 64 * h)
            lo, hi = d[2 * h], d[2 * h + 1]
            if pc:
                lines.append(f"vpandd {A}, {m}, {z(28)}")
                shuf(2 * h, 28)
                lines.append(f"vpsrlw $4, {A}, {z(28)}")
                lines.append(f"vpandd {m}, {z(28)}, {z(28)}")
                shuf(2 * h + 1, 28)
            else:
                lines.append(f"vpsrlw $4, {A}, {z(hi)}")
                lines.append(f"vpandd {A}, {m}, {z(lo)}")
                lines.append(f"vpandd {m}, {z(hi)}, {z(hi)}")
                shuf(2 * h, lo)
                shuf(2 * h + 1, hi)
    else:
        A = addr(p, 0)
        for c in range(4):
            t = 28 if pc else d[c]
            if c == 0:
                lines.append(f"vpandd {A}, {m}, {z(t)}")
            else:
                lines.append(f"vpsrlw ${2 * c}, {A}, {z(t)}")
                lines.append(f"vpandd {m}, {z(t)}, {z(t)}")
            shuf(c, t)


def load_x(r, masked, lines, reg):
    if masked:
        lines.append(f"vmovdqu8 {arow(r, 0)}, %%xmm{reg}%{{%%k1%}}%{{z%}}")
        lines.append(f"vshufi32x4 $0, {z(reg)}, {z(reg)}, {z(reg)}")
    else:
        lines.append(f"vbroadcasti32x4 {arow(r, 0)}, {z(reg)}")


def step(bits, pc, mr, np_, masked, lines):
    if mr == 1 and not masked:
        step_bytes = 32 * bits
        for p in range(np_):
            for o in range(0, step_bytes, 64):
                lines.append(f"prefetcht0 {addr(p, PF + o)}")
    if mr <= 2:
        for r in range(mr):
            load_x(r, masked, lines, 30 + r)
    for p in range(np_):
        decode(bits, pc, p, lines)
        for r in range(mr):
            x = 30 + (r % 2)
            if mr > 2:
                load_x(r, masked, lines, x)
            for c in range(4):
                lines.append(f"vpdpbusd {z(x)}, {z(24 + c)}, {z((p * mr + r) * 4 + c)}")


def kloop(bits, pc, mr, np_):
    nacc = mr * np_ * 4
    sb = 32 * bits
    L = []
    if not pc:
        L.append("vmovdqa64 (%[tab]), %%zmm28")
    L.append("vpbroadcastd %[m32], %%zmm29")
    for i in range(nacc):
        L.append(f"vpxord {z(i)}, {z(i)}, {z(i)}")
    L += ["test %[n], %[n]", "jz 2f", ".p2align 5", "1:"]
    step(bits, pc, mr, np_, False, L)
    L.append(f"add ${sb}, %[w]")
    if np_ == 4:
        L.append(f"add ${sb}, %[w3]")
    L += ["add $16, %[a0]", "add $16, %[a3]", "dec %[n]", "jnz 1b", "2:",
          "kmovw %k[mask], %%k1", "ktestw %%k1, %%k1", "jz 5f"]
    step(bits, pc, mr, np_, True, L)
    L.append("5:")
    for i in range(nacc):
        L.append(f"vmovdqa64 {z(i)}, {64 * i}(%[acc])")
    body = "\n".join(f'      "{l}\\n\\t"' for l in L)
    used = sorted(set(list(range(nacc)) + [24, 25, 26, 27, 28, 29, 30, 31]))
    clob = ", ".join(f'"xmm{i}"' for i in used)
    return f"""template <>
EO_INLINE void kloop<{bits}, {'true' if pc else 'false'}, {mr}, {np_}>(const int8_t* a0, size_t lda,
    const uint8_t* w, size_t ps, const uint8_t* tab, long n, uint32_t mask, int32_t* acc) {{
  const int8_t* a3 = a0 + 3 * lda;
  const uint8_t* w3 = w + 3 * ps;
  const uint32_t m32 = {'0x0F0F0F0Fu' if bits == 4 else '0x03030303u'};
  asm volatile(
{body}
      : [w] "+r"(w), [w3] "+r"(w3), [a0] "+r"(a0), [a3] "+r"(a3), [n] "+r"(n)
      : [lda] "r"(lda), [ps] "r"(ps), [tab] "r"(tab), [mask] "r"(mask), [acc] "r"(acc),
        [m32] "m"(m32)
      : {clob}, "k1", "memory", "cc");
}}
"""


def main():
    out = []
    for bits in (4, 2):
        for pc in (False, True):
            for mr, np_ in TILES:
                out.append(kloop(bits, pc, mr, np_))
    text = "\n".join(out)
    path = sys.argv[1]
    src = open(path).read()
    b = src.index("// BEGIN GENERATED")
    b = src.index("\n", b) + 1
    e = src.index("// END GENERATED")
    open(path, "w").write(src[:b] + text + src[e:])


if __name__ == "__main__":
    main()
