// vt.h — everything of core: errors, memory, tensors, tape autograd, ops.
#pragma once
#include "error.h"
#include "memory.h"
#include "tensor.h"
#include "tape.h"
#include "ops.h"
