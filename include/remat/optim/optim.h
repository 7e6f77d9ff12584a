// remat::optim: optimizers, learning-rate schedules and gradient clipping.
#pragma once

#include "remat/optim/adam.h"
#include "remat/optim/clip_grad.h"
#include "remat/optim/lr_scheduler.h"
#include "remat/optim/optimizer.h"
#include "remat/optim/sgd.h"
