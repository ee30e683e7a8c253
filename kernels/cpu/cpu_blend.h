// CPU loops of the seed blend (kernels/blend.h); operands contiguous and of one shape.
#pragma once

#include "kernels/blend.h"

namespace kasmina::kernels::cpu {

#include "kernels/blend_backend.inc"

}  // namespace kasmina::kernels::cpu
