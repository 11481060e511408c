// protattn grouped engine: the Q K^T grouped GEMM for cutlass::half_t.
#include "cuda/grouped/grouped_gemm.cuh"

namespace protattn::grouped {

std::unique_ptr<GroupedGemm> make_qk_gemm_f16(const GemmSetup& s) { return make_qk<cutlass::half_t>(s); }

}  // namespace protattn::grouped
