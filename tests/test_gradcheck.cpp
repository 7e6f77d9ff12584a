// One registry-driven gradient test: every differentiable op in the registry
// is checked against central differences in float64.
#include <gtest/gtest.h>

#include <set>

#include "ops/registry.h"
#include "support/gradcheck.h"

namespace remat::testing {
namespace {

TEST(Gradcheck, EveryDifferentiableOpHasASample) {
  std::set<std::string> covered;
  for (const OpSample& s : registry_samples()) covered.insert(s.op);
  std::vector<std::string> missing;
  for (const ops::OpDef* def : ops::Registry::instance().all()) {
    if (def->backward && !covered.count(def->name)) missing.push_back(def->name);
  }
  EXPECT_TRUE(missing.empty()) << "ops without a gradcheck sample: "
                               << fmt::format("{}", fmt::join(missing, ", "));
}

class GradcheckOp : public ::testing::TestWithParam<size_t> {};

TEST_P(GradcheckOp, MatchesFiniteDifferences) {
  std::vector<OpSample> samples = registry_samples();
  const OpSample& s = samples.at(GetParam());
  GradcheckResult r = gradcheck(s);
  EXPECT_LE(r.max_error, 1e-6) << s.op << " (" << s.label << "): " << r.worst;
}

INSTANTIATE_TEST_SUITE_P(Registry, GradcheckOp,
                         ::testing::Range<size_t>(0, registry_samples().size()),
                         [](const ::testing::TestParamInfo<size_t>& param_info) {
                           return sample_test_name(registry_samples().at(param_info.param),
                                                   param_info.param);
                         });

}  // namespace
}  // namespace remat::testing
