// protattn grouped engine: the P V grouped GEMM for cutlass::half_t.
#include "cuda/grouped/grouped_gemm.cuh"

namespace protattn::grouped {

std::unique_ptr<GroupedGemm> make_pv_gemm_f16(const GemmSetup& s) { return make_pv<cutlass::half_t>(s); }

}  // namespace protattn::grouped
