// A remat built without MPI (REMAT_ENABLE_MPI=OFF, or no MPI found) still
// compiles remat/distributed.h, and its entry point says why it cannot run.
// Where MPI is built in, tests/test_distributed.cpp runs under mpirun instead.
#include <gtest/gtest.h>

#include <string>

#include "remat/distributed.h"
#include "remat/ops.h"

namespace remat::distributed {
namespace {

TEST(DistributedUnavailable, WorldThrowsNotImplementedNamingTheFix) {
  if (mpi_available()) GTEST_SKIP() << "built with MPI: test_distributed runs under mpirun";
  EXPECT_FALSE(nccl_available());
  try {
    ProcessGroup::world();
    ADD_FAILURE() << "no error";
  } catch (const NotImplementedError& e) {
    EXPECT_NE(std::string(e.what()).find("built without MPI"), std::string::npos) << e.what();
  }
  // The library keeps working after it.
  EXPECT_EQ(sum(ones({3})).item<float>(), 3.0f);
}

}  // namespace
}  // namespace remat::distributed
