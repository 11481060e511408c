// protattn fused engine: Hopper warpgroup MMA (wgmma) wrappers, sm_90a only.
// Generated shapes: S = Q K^T as m64n{64,128}k16 with both operands in shared memory (K-major,
// 128-byte swizzle) or as m64n128k16 with Q in registers, and O += P V as m64n{32,40,64,72,128}k16 with
// P in registers and V in shared memory (MN-major, 128-byte swizzle). Accumulators fp32.
#pragma once
#include <cstdint>

namespace protattn::fused::sm90 {

// Shared-memory matrix descriptor: start address, leading / stride byte offsets, 128B swizzle.
__device__ __forceinline__ std::uint64_t smem_desc(std::uint32_t addr, std::uint32_t lbo, std::uint32_t sbo) {
  constexpr std::uint64_t kSwizzle128B = 1;
  return static_cast<std::uint64_t>((addr & 0x3ffff) >> 4) | (static_cast<std::uint64_t>((lbo & 0x3ffff) >> 4) << 16) |
         (static_cast<std::uint64_t>((sbo & 0x3ffff) >> 4) << 32) | (kSwizzle128B << 62);
}

// The descriptor of the address `bytes` further: its address field (bits 0-13, in 16-byte units)
// cannot carry into the next field inside one block's shared memory (under 256 KiB), so only the
// low word changes: one integer add, where making each descriptor anew takes three dependent
// operations ahead of every wgmma.
__device__ __forceinline__ std::uint64_t desc_advance(std::uint64_t d, std::uint32_t bytes) {
  const std::uint32_t lo = static_cast<std::uint32_t>(d) + (bytes >> 4);
  return (d & 0xffffffff00000000ull) | lo;
}

// The descriptor of the address `bytes` further whose leading byte offset still reaches the same
// block (its LBO field, bits 16-29, drops by as much: the caller keeps it from going below zero).
__device__ __forceinline__ std::uint64_t desc_advance_fixed_lbo(std::uint64_t d, std::uint32_t bytes) {
  const std::uint32_t lo = static_cast<std::uint32_t>(d) + (bytes >> 4) - ((bytes >> 4) << 16);
  return (d & 0xffffffff00000000ull) | lo;
}

__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Orders generic-proxy shared-memory writes (cp.async, st.shared) before async-proxy reads (wgmma).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// One wrapper per shape, made for each element type (f16, bf16: the instruction's type names).
// d[32] (+)= A[64x16] (smem desc) * B[16x64] (smem desc); scale_d 0 overwrites d.
#define PROTATTN_WGMMA_SS_M64N64K16(TY) \
__device__ __forceinline__ void ss_m64n64k16_##TY(float (&d)[32], std::uint64_t a, std::uint64_t b, int scale_d) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
      : "l"(a), "l"(b), "r"(scale_d)); \
}
PROTATTN_WGMMA_SS_M64N64K16(f16)
PROTATTN_WGMMA_SS_M64N64K16(bf16)
#undef PROTATTN_WGMMA_SS_M64N64K16
// d[32] += A[64x16] (registers, 4 x f16x2 or bf16x2) * B[16x64] (smem desc, MN-major).
#define PROTATTN_WGMMA_RS_M64N64K16(TY) \
__device__ __forceinline__ void rs_m64n64k16_##TY(float (&d)[32], const std::uint32_t (&a)[4], std::uint64_t b) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.eq.u32 p, 1, 1;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)); \
}
PROTATTN_WGMMA_RS_M64N64K16(f16)
PROTATTN_WGMMA_RS_M64N64K16(bf16)
#undef PROTATTN_WGMMA_RS_M64N64K16
// d[36] += A[64x16] (registers) * B[16x72] (smem desc, MN-major): P V with 8 more columns.
#define PROTATTN_WGMMA_RS_M64N72K16(TY) \
__device__ __forceinline__ void rs_m64n72k16_##TY(float (&d)[36], const std::uint32_t (&a)[4], std::uint64_t b) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.eq.u32 p, 1, 1;\n" \
      "wgmma.mma_async.sync.aligned.m64n72k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}, {%36, %37, %38, %39}, %40, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)); \
}
PROTATTN_WGMMA_RS_M64N72K16(f16)  // fp16 only: the row sums of bf16 probabilities would be too coarse
#undef PROTATTN_WGMMA_RS_M64N72K16
// d[16] += A[64x16] (registers) * B[16x32] (smem desc, MN-major): P V at d=32.
#define PROTATTN_WGMMA_RS_M64N32K16(TY) \
__device__ __forceinline__ void rs_m64n32k16_##TY(float (&d)[16], const std::uint32_t (&a)[4], std::uint64_t b) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.eq.u32 p, 1, 1;\n" \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)); \
}
PROTATTN_WGMMA_RS_M64N32K16(f16)
PROTATTN_WGMMA_RS_M64N32K16(bf16)
#undef PROTATTN_WGMMA_RS_M64N32K16
// d[20] += A[64x16] (registers) * B[16x40] (smem desc, MN-major): P V at d=32 with 8 more columns.
#define PROTATTN_WGMMA_RS_M64N40K16(TY) \
__device__ __forceinline__ void rs_m64n40k16_##TY(float (&d)[20], const std::uint32_t (&a)[4], std::uint64_t b) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.eq.u32 p, 1, 1;\n" \
      "wgmma.mma_async.sync.aligned.m64n40k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19}, {%20, %21, %22, %23}, %24, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)); \
}
PROTATTN_WGMMA_RS_M64N40K16(f16)  // fp16 only, as m64n72
#undef PROTATTN_WGMMA_RS_M64N40K16
// d[64] += A[64x16] (registers, 4 x f16x2 or bf16x2) * B[16x128] (smem desc, MN-major).
#define PROTATTN_WGMMA_RS_M64N128K16(TY) \
__device__ __forceinline__ void rs_m64n128k16_##TY(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t b) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.eq.u32 p, 1, 1;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b)); \
}
PROTATTN_WGMMA_RS_M64N128K16(f16)
PROTATTN_WGMMA_RS_M64N128K16(bf16)
#undef PROTATTN_WGMMA_RS_M64N128K16
// d[64] (+)= A[64x16] (smem desc) * B[16x128] (smem desc); scale_d 0 overwrites d.
#define PROTATTN_WGMMA_SS_M64N128K16(TY) \
__device__ __forceinline__ void ss_m64n128k16_##TY(float (&d)[64], std::uint64_t a, std::uint64_t b, int scale_d) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "l"(a), "l"(b), "r"(scale_d)); \
}
PROTATTN_WGMMA_SS_M64N128K16(f16)
PROTATTN_WGMMA_SS_M64N128K16(bf16)
#undef PROTATTN_WGMMA_SS_M64N128K16
// d[64] (+)= A[64x16] (registers, 4 x f16x2 or bf16x2) * B[16x128] (smem desc, K-major); scale_d 0 overwrites d.
#define PROTATTN_WGMMA_RS_KMAJOR_M64N128K16(TY) \
__device__ __forceinline__ void rs_kmajor_m64n128k16_##TY(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t b, int scale_d) { \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." #TY "." #TY " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d)); \
}
PROTATTN_WGMMA_RS_KMAJOR_M64N128K16(f16)
PROTATTN_WGMMA_RS_KMAJOR_M64N128K16(bf16)
#undef PROTATTN_WGMMA_RS_KMAJOR_M64N128K16
}  // namespace protattn::fused::sm90
