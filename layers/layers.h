// Everything in layers/: the module system, the standard layers, optimizers and schedules.
#pragma once

#include "layers/activation.h"
#include "layers/conv2d.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "layers/multihead_attention.h"
#include "layers/normalization.h"
#include "layers/optim.h"
#include "layers/sequential.h"
