// Kernel tables by path, built without ISA flags: only getters whose file was compiled are named.
#include "common/ukernel.h"

namespace edgeopt {

const QS8GemmUKernel* qs8_gemm_ukernel(Path p) {
  switch (p) {
    case kScalar: return qs8_gemm_ukernel__scalar();
#ifdef EDGEOPT_HAVE_FILE_QS8_GEMM_AVX2
    case kAvx2: return qs8_gemm_ukernel__avx2();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_GEMM_AVX512VNNI
    case kAvx512Vnni: return qs8_gemm_ukernel__avx512vnni();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_GEMM_AMX
    case kAmxInt8: return qs8_gemm_ukernel__amx();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_GEMM_NEON
    case kNeon: return qs8_gemm_ukernel__neon();
#endif
#ifdef EDGEOPT_HAVE_FILE_QS8_GEMM_NEONDOT
    case kNeonDot: return qs8_gemm_ukernel__neondot();
#endif
    default: return nullptr;
  }
}

const F32GemmUKernel* f32_gemm_ukernel(Path p) {
  switch (p) {
    case kScalar: return f32_gemm_ukernel__scalar();
#ifdef EDGEOPT_HAVE_FILE_F32_GEMM_AVX2
    case kAvx2: return f32_gemm_ukernel__avx2();
#endif
#ifdef EDGEOPT_HAVE_FILE_F32_GEMM_AVX512
    case kAvx512Vnni: return f32_gemm_ukernel__avx512();
#endif
#ifdef EDGEOPT_HAVE_FILE_F32_GEMM_NEON
    case kNeon: return f32_gemm_ukernel__neon();
    case kNeonDot: return f32_gemm_ukernel__neon();  // fp32 has no dot-product variant
#endif
    default: return nullptr;
  }
}

}  // namespace edgeopt
