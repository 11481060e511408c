// protattn grouped engine: the CUTLASS 4 Hopper grouped GEMM (ptr-array, TMA, warp-specialized
// cooperative) behind GroupedGemm. Included only by the gemm_*.cu instantiation files.
#pragma once
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/operations.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/group_array_problem_shape.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/common/device_buffer.hpp"
#include "cuda/grouped/grouped_gemm.hpp"
#include "protattn/error.hpp"

namespace protattn::grouped {

// The kernel of one stage: Element in (fp16/bf16), fp32 accumulation, fp32 D without a source
// operand (D = A B, no C). A is row-major (K contiguous); LayoutB is ColumnMajor for Q K^T
// (the K tile, K contiguous) and RowMajor for P V (the V tile, N contiguous). One CTA tile of
// 128 x TileN x 64, clusters of one CTA (the problems share no operand tiles to multicast).
template <typename Element, typename LayoutB, int TileN>
struct GemmTraits {
  using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;  // (M,N,K) per problem
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignIn = 16 / static_cast<int>(sizeof(Element));  // 16-byte TMA rows
  static constexpr int kAlignOut = 16 / static_cast<int>(sizeof(float));
  using TileShape = cute::Shape<cute::_128, cute::Int<TileN>, cute::_64>;  // (BLK_M,BLK_N,BLK_K)
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,
      void, LayoutD*, kAlignOut,   // no source operand C
      float, LayoutD*, kAlignOut,  // D
      cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
      cutlass::epilogue::fusion::LinearCombination<float, float, void>>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      Element, LayoutA*, kAlignIn,
      Element, LayoutB*, kAlignIn,
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename CollectiveEpilogue::SharedStorage))>,
      cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// The stride of a packed operand in CuTe's (outer, inner, batch) form: the one dynamic mode
// (the non-contiguous one) gets the leading dimension `ld`; the batch mode is unused (one
// matrix per problem).
template <typename Stride>
Stride packed_stride(std::int64_t ld) {
  Stride s{};
  if constexpr (cute::is_static<cute::remove_cvref_t<decltype(cute::get<0>(s))>>::value)
    cute::get<1>(s) = ld;
  else
    cute::get<0>(s) = ld;
  return s;
}

template <typename Traits>
class CutlassGroupedGemm final : public GroupedGemm {
  using Gemm = typename Traits::Gemm;
  using Kernel = typename Traits::Kernel;
  using Shape = typename Traits::ProblemShape::UnderlyingProblemShape;
  using StrideA = typename Kernel::InternalStrideA;
  using StrideB = typename Kernel::InternalStrideB;
  using StrideD = typename Kernel::InternalStrideD;
  using ElementA = typename Kernel::ElementA;
  using ElementB = typename Kernel::ElementB;

 public:
  // (m, n, k): the shape of every problem; lda, ldb, ldd: leading dimensions of the packed
  // operands (A row-major m x k; B n x k in the layout of Traits; D row-major m x n).
  CutlassGroupedGemm(const GemmSetup& s, int m, int n, int k, int lda, int ldb, int ldd, const char* what)
      : what_(what) {
    if (s.count <= 0) throw Error(what_ + ": no problems");
    shapes_host_.assign(static_cast<std::size_t>(s.count), Shape{m, n, k});
    shapes_.upload(shapes_host_);
    strides_a_.upload(std::vector<StrideA>(s.count, packed_stride<StrideA>(lda)));
    strides_b_.upload(std::vector<StrideB>(s.count, packed_stride<StrideB>(ldb)));
    strides_d_.upload(std::vector<StrideD>(s.count, packed_stride<StrideD>(ldd)));

    typename Gemm::Arguments args;
    args.mode = cutlass::gemm::GemmUniversalMode::kGrouped;
    args.problem_shape = {s.count, shapes_.as<Shape>(), shapes_host_.data()};
    args.mainloop = {reinterpret_cast<const ElementA**>(const_cast<const void**>(s.a)), strides_a_.as<StrideA>(),
                     reinterpret_cast<const ElementB**>(const_cast<const void**>(s.b)), strides_b_.as<StrideB>()};
    args.epilogue.thread.alpha = 1.0f;
    args.epilogue.thread.beta = 0.0f;
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = nullptr;
    args.epilogue.ptr_D = const_cast<float**>(s.d);
    args.epilogue.dD = strides_d_.as<StrideD>();
    args.hw_info = cutlass::KernelHardwareInfo::make_kernel_hardware_info<Kernel>(s.device);

    check(Gemm::can_implement(args), "can_implement");
    workspace_.resize(Gemm::get_workspace_size(args));
    check(gemm_.initialize(args, workspace_.get()), "initialize");
  }

  void launch(cudaStream_t stream) override { check(gemm_.run(stream), "run"); }

  std::size_t device_bytes() const override {
    return shapes_.bytes() + strides_a_.bytes() + strides_b_.bytes() + strides_d_.bytes() + workspace_.bytes();
  }

 private:
  void check(cutlass::Status st, const char* step) const {
    if (st != cutlass::Status::kSuccess)
      throw Error(what_ + ": CUTLASS " + step + " failed: " + cutlass::cutlassGetStatusString(st));
  }

  std::string what_;
  std::vector<Shape> shapes_host_;  // read by every launch (grid size)
  cuda::DeviceBuffer shapes_, strides_a_, strides_b_, strides_d_, workspace_;
  Gemm gemm_;
};

// Q K^T: per kept tile pair S (kTile x kTile) = Q tile (kTile x dim) * K tile (kTile x dim)^T.
template <typename Element>
std::unique_ptr<GroupedGemm> make_qk(const GemmSetup& s) {
  using Traits = GemmTraits<Element, cutlass::layout::ColumnMajor, kTile>;
  return std::make_unique<CutlassGroupedGemm<Traits>>(s, kTile, kTile, s.dim, s.dim, s.dim, kTile,
                                                      "grouped engine, Q K^T GEMM");
}

// P V: per kept tile pair O partial (kTile x dim) = P (kTile x kTile) * V tile (kTile x dim).
inline constexpr int kPvTileN = 64;
template <typename Element>
std::unique_ptr<GroupedGemm> make_pv(const GemmSetup& s) {
  using Traits = GemmTraits<Element, cutlass::layout::RowMajor, kPvTileN>;
  return std::make_unique<CutlassGroupedGemm<Traits>>(s, kTile, s.dim, kTile, kTile, s.dim, s.dim,
                                                      "grouped engine, P V GEMM");
}

}  // namespace protattn::grouped
