// remat::nn: modules, layers and their saved state.
#pragma once

#include "remat/nn/containers.h"
#include "remat/nn/layers.h"
#include "remat/nn/module.h"
#include "remat/nn/resnet.h"
#include "remat/nn/state.h"
#include "remat/nn/transformer.h"
