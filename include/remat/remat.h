// remat: a C++20 training library whose promise is memory.
#pragma once

#include "remat/autograd.h"
#include "remat/checkpoint.h"
#include "remat/core/device.h"
#include "remat/core/dtype.h"
#include "remat/core/error.h"
#include "remat/core/generator.h"
#include "remat/core/grad_mode.h"
#include "remat/core/math_mode.h"
#include "remat/core/shape.h"
#include "remat/core/stream.h"
#include "remat/core/tensor.h"
#include "remat/data/data.h"
#include "remat/memory/memory.h"
#include "remat/nn/nn.h"
#include "remat/ops.h"
#include "remat/optim/optim.h"
