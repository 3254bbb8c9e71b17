// Which CUDA kernels run for a problem: one plan function per op, chosen from the problem alone (dtype, sizes)
// plus an explicit override for tests and benchmarks, never from the environment. Plain C++17 (no torch, no
// CUDA headers), so the launchers (csrc/cuda/*.cu), both registration files, the Python module
// (fastdipole._C.envsum_plan, read by fastdipole/ops/kernels.py) and the CPU emulator test of the kernels
// (tests/cuda_host) all see the same choice.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fastdipole::cuda {

// ---------------------------------------------------------------------------------------------------------
// Neighbour pairs: molecules with at least this many atoms use the cell list, smaller ones brute force (one
// warp per receiving atom over its molecule). The op argument cell_list_min_atoms overrides it (tests push one
// molecule through both paths, benchmarks move the threshold).
// ---------------------------------------------------------------------------------------------------------
constexpr int64_t kDefaultCellListMinAtoms = 2048;

// ---------------------------------------------------------------------------------------------------------
// Gaussian envsum. Forward kernels: lanes (envsum_lanes.cuh: one warp per atom and chunk of 32 x CT features,
// every sensitivity's accumulator in registers) or block (envsum.cu: one block per atom, one thread per
// (feature, group of sensitivities)). Backward pass 1: lanes (float32 only) or tiled (envsum.cu). "auto" takes
// the lanes kernels where they were measured fastest on an H200 (benchmarks/README.md): n_sens <= 32 and at
// least 16 features (the one-hot layer's few features leave most lanes idle), and in the backward float32 only
// (in float64 the tiled kernel was faster).
// ---------------------------------------------------------------------------------------------------------

// Largest n_sens the envsum kernels accept (their per-block shared memory holds a tile of pairs x n_sens).
constexpr int64_t kMaxSensitivities = 256;
// The lanes kernels keep every sensitivity of a lane in registers: at most 32, and they pay off from 16 features.
constexpr int64_t kLanesMaxSensitivities = 32;
constexpr int64_t kLanesMinFeatures = 16;

enum class EnvsumForwardKernel { kAuto, kLanes, kBlock };
enum class EnvsumBackwardKernel { kAuto, kLanes, kTiled };

// What the caller asks for: auto (the default everywhere) or one kernel forced per pass.
struct EnvsumKernelChoice {
  EnvsumForwardKernel forward = EnvsumForwardKernel::kAuto;
  EnvsumBackwardKernel backward = EnvsumBackwardKernel::kAuto;
};

// The problem as the choice sees it.
struct EnvsumShape {
  int element_bytes = 4;  // 4: float32, 8: float64
  int64_t n_sens = 0;
  int64_t n_features = 0;
};

// The kernels that run, with the compile-time widths the launchers instantiate (0 where a kernel does not run).
struct EnvsumPlan {
  EnvsumForwardKernel forward = EnvsumForwardKernel::kBlock;    // kLanes or kBlock
  EnvsumBackwardKernel backward = EnvsumBackwardKernel::kTiled;  // kLanes or kTiled
  int lanes_slots = 0;       // lanes kernels: register slots per lane for the sensitivities (8, 16, 20, 24, 32)
  int forward_columns = 0;   // lanes forward: 32-feature columns per lane (1, 2, 4)
  int backward_columns = 0;  // lanes backward: 32-feature columns per lane (1, 2)
  int block_group = 0;       // block forward: sensitivities per thread (4, 8, 16, 32)
  int featsum_columns = 1;   // featsum pass of the backward: 32-feature columns per lane (1, 2)
  std::string error;         // empty, or why the asked-for kernel cannot run this problem (then nothing runs)

  bool ok() const { return error.empty(); }
};

// Sensitivity slots per lane: the smallest of 8, 16, 20, 24, 32 that holds n_sens (20 is HIP-NN's usual count,
// where 24 slots would spend a sixth of the FMAs on padding).
inline int lanes_slots(int64_t n_sens) {
  if (n_sens <= 8) return 8;
  if (n_sens <= 16) return 16;
  if (n_sens <= 20) return 20;
  if (n_sens <= 24) return 24;
  return 32;
}

// 32-feature columns per lane: in float32 as many as the features need, up to max_columns (the forward: 4, one
// warp covers a 128-feature row and stages its pairs once; the backward, which also holds a 32-value warp sum
// in registers: 2, as measured); in float64 always 1 (double registers are twice as wide).
inline int lanes_columns(const EnvsumShape& shape, int max_columns) {
  if (shape.element_bytes != 4) return 1;
  if (max_columns >= 4 && shape.n_features > 64) return 4;
  if (max_columns >= 2 && shape.n_features > 32) return 2;
  return 1;
}

// Sensitivities per thread of the block forward: enough for n_sens in one group up to 32, halved while the
// (feature, group) tasks would fill fewer than 128 threads (small-F layers get more threads).
inline int block_group(const EnvsumShape& shape) {
  const int64_t S = shape.n_sens, F = shape.n_features;
  int vt = S > 16 ? 32 : (S > 8 ? 16 : (S > 4 ? 8 : 4));
  while (vt > 4 && F * ((S + vt - 1) / vt) < 128) vt /= 2;
  return vt;
}

inline bool lanes_by_default(const EnvsumShape& shape) {
  return shape.n_sens <= kLanesMaxSensitivities && shape.n_features >= kLanesMinFeatures;
}

// The plan for one problem: `choice` as asked, auto resolved as above. A forced kernel that cannot run the
// problem (lanes for n_sens > 32, the lanes backward in float64) is refused with the reason in plan.error,
// never replaced by another kernel.
inline EnvsumPlan plan_envsum(const EnvsumShape& shape, EnvsumKernelChoice choice = {}) {
  EnvsumPlan plan;
  const std::string S = std::to_string(shape.n_sens);
  if (shape.n_sens > kMaxSensitivities) {
    plan.error = "at most " + std::to_string(kMaxSensitivities) + " sensitivities on CUDA, got " + S;
    return plan;
  }
  const bool lanes_fit = shape.n_sens <= kLanesMaxSensitivities;
  switch (choice.forward) {
    case EnvsumForwardKernel::kAuto:
      plan.forward = lanes_by_default(shape) ? EnvsumForwardKernel::kLanes : EnvsumForwardKernel::kBlock;
      break;
    case EnvsumForwardKernel::kLanes:
      if (!lanes_fit) plan.error = "the lanes forward needs n_sens <= 32, got " + S;
      plan.forward = EnvsumForwardKernel::kLanes;
      break;
    case EnvsumForwardKernel::kBlock:
      plan.forward = EnvsumForwardKernel::kBlock;
      break;
  }
  const bool float32 = shape.element_bytes == 4;
  switch (choice.backward) {
    case EnvsumBackwardKernel::kAuto:
      plan.backward = float32 && lanes_by_default(shape) ? EnvsumBackwardKernel::kLanes : EnvsumBackwardKernel::kTiled;
      break;
    case EnvsumBackwardKernel::kLanes:
      if (!float32 && plan.error.empty()) plan.error = "the lanes backward runs in float32 only, got float64";
      if (!lanes_fit && plan.error.empty()) plan.error = "the lanes backward needs n_sens <= 32, got " + S;
      plan.backward = EnvsumBackwardKernel::kLanes;
      break;
    case EnvsumBackwardKernel::kTiled:
      plan.backward = EnvsumBackwardKernel::kTiled;
      break;
  }
  const bool any_lanes = plan.forward == EnvsumForwardKernel::kLanes || plan.backward == EnvsumBackwardKernel::kLanes;
  if (any_lanes) plan.lanes_slots = lanes_slots(shape.n_sens);
  if (plan.forward == EnvsumForwardKernel::kLanes) plan.forward_columns = lanes_columns(shape, 4);
  if (plan.forward == EnvsumForwardKernel::kBlock) plan.block_group = block_group(shape);
  if (plan.backward == EnvsumBackwardKernel::kLanes) plan.backward_columns = lanes_columns(shape, 2);
  plan.featsum_columns = lanes_columns(shape, 2);
  return plan;
}

// Whether `plan` is the one plan_envsum makes for `shape` with its kernels forced (the launchers refuse others:
// their template widths must match the problem).
inline bool plan_is_for(const EnvsumPlan& plan, const EnvsumShape& shape) {
  const EnvsumPlan want = plan_envsum(shape, EnvsumKernelChoice{plan.forward, plan.backward});
  return plan.ok() && want.ok() && want.lanes_slots == plan.lanes_slots &&
         want.forward_columns == plan.forward_columns && want.backward_columns == plan.backward_columns &&
         want.block_group == plan.block_group && want.featsum_columns == plan.featsum_columns;
}

// ---- the override as text: the ops' kernel_choice argument --------------------------------------------------
// "auto", or "<forward>/<backward>" with forward auto | lanes | block and backward auto | lanes | tiled
// ("lanes/lanes", "block/tiled", "auto/tiled", ...). Both envsum ops take the same text (the forward op's
// autograd hands it to the backward op); each reads its own half.
constexpr const char* kEnvsumKernelSyntax =
    "\"auto\" or \"<forward>/<backward>\" with forward auto|lanes|block and backward auto|lanes|tiled";

inline const char* envsum_kernel_name(EnvsumForwardKernel k) {
  return k == EnvsumForwardKernel::kLanes ? "lanes" : (k == EnvsumForwardKernel::kBlock ? "block" : "auto");
}
inline const char* envsum_kernel_name(EnvsumBackwardKernel k) {
  return k == EnvsumBackwardKernel::kLanes ? "lanes" : (k == EnvsumBackwardKernel::kTiled ? "tiled" : "auto");
}

// Reads `text` into *choice; false (choice untouched) when it is not of the form above.
inline bool parse_envsum_kernel(std::string_view text, EnvsumKernelChoice* choice) {
  if (text == "auto") {
    *choice = EnvsumKernelChoice{};
    return true;
  }
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) return false;
  const std::string_view fw = text.substr(0, slash), bw = text.substr(slash + 1);
  EnvsumKernelChoice out;
  if (fw == "lanes") {
    out.forward = EnvsumForwardKernel::kLanes;
  } else if (fw == "block") {
    out.forward = EnvsumForwardKernel::kBlock;
  } else if (fw != "auto") {
    return false;
  }
  if (bw == "lanes") {
    out.backward = EnvsumBackwardKernel::kLanes;
  } else if (bw == "tiled") {
    out.backward = EnvsumBackwardKernel::kTiled;
  } else if (bw != "auto") {
    return false;
  }
  *choice = out;
  return true;
}

}  // namespace fastdipole::cuda
