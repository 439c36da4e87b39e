#include <gtest/gtest.h>

#include "ref_op_runner.h"
