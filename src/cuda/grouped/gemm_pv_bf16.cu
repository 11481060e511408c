// protattn grouped engine: the P V grouped GEMM for cutlass::bfloat16_t.
#include "cuda/grouped/grouped_gemm.cuh"

namespace protattn::grouped {

std::unique_ptr<GroupedGemm> make_pv_gemm_bf16(const GemmSetup& s) { return make_pv<cutlass::bfloat16_t>(s); }

}  // namespace protattn::grouped
