// The CPU backend: oneDNN primitives (matmul, softmax, eltwise) for float32 and OpenMP loops
// elsewhere (float64, integer dtypes, ops oneDNN lacks). Outputs are allocated and checked by
// kernels/dispatch.cpp; these functions only fill them. Shapes in comments are the callers' contract.
#pragma once

#include <optional>
#include <vector>

#include "kernels/kernels.h"

namespace kasmina::kernels::cpu {

#include "kernels/backend_ops.inc"

}  // namespace kasmina::kernels::cpu
