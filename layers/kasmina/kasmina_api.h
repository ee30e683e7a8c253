// Everything in layers/kasmina/ (namespace kasmina::morph): seed state, kernel artifacts and
// blueprints, the kernel store and cache, the Kasmina layers, wrap() and telemetry.
#pragma once

#include "layers/kasmina/artifact.h"
#include "layers/kasmina/blueprints.h"
#include "layers/kasmina/checkpoint.h"
#include "layers/kasmina/kasmina_layers.h"
#include "layers/kasmina/kernel_cache.h"
#include "layers/kasmina/kernel_network.h"
#include "layers/kasmina/kernel_store.h"
#include "layers/kasmina/seed_bank.h"
#include "layers/kasmina/seed_state.h"
#include "layers/kasmina/telemetry.h"
#include "layers/kasmina/wrap.h"
