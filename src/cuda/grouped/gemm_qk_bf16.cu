// protattn grouped engine: the Q K^T grouped GEMM for cutlass::bfloat16_t.
#include "cuda/grouped/grouped_gemm.cuh"

namespace protattn::grouped {

std::unique_ptr<GroupedGemm> make_qk_gemm_bf16(const GemmSetup& s) { return make_qk<cutlass::bfloat16_t>(s); }

}  // namespace protattn::grouped
