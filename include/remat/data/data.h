// remat::data: datasets (IDX images and labels, Fashion-MNIST, character-level
// text) and the batching that feeds them to a training loop.
#pragma once

#include "remat/data/batch.h"
#include "remat/data/fashion_mnist.h"
#include "remat/data/idx.h"
#include "remat/data/loader.h"
#include "remat/data/random_stream.h"
#include "remat/data/text.h"
