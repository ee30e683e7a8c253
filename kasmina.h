// The umbrella header: everything a user of the kasmina runtime needs from one include.
#pragma once

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/convolution.h"
#include "autograd/normalization.h"
#include "autograd/ops.h"
#include "runtime/device.h"
#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/grad_mode.h"
#include "runtime/random.h"
#include "runtime/safetensors.h"
#include "runtime/shape.h"
#include "runtime/tensor.h"
#include "layers/layers.h"
#include "autograd/blend.h"
