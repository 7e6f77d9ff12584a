// One registry-driven gradient test: every differentiable op in the registry
// is checked against central differences in float64.
#include <gtest/gtest.h>

#include <set>

#include "ops/registry.h"
#include "support/gradcheck.h"

namespace remat::testing {
namespace {

std::vector<OpSample> all_samples() {
  std::vector<OpSample> all;
  for (auto family : {elementwise_samples, reduction_samples, shape_samples, linalg_samples,
                      activation_samples, normalization_samples, random_samples, loss_samples,
                      conv_samples, pool_samples, attention_samples, embedding_samples}) {
    for (OpSample& s : family()) all.push_back(std::move(s));
  }
  return all;
}

TEST(Gradcheck, EveryDifferentiableOpHasASample) {
  std::set<std::string> covered;
  for (const OpSample& s : all_samples()) covered.insert(s.op);
  std::vector<std::string> missing;
  for (const ops::OpDef* def : ops::Registry::instance().all()) {
    if (def->backward && !covered.count(def->name)) missing.push_back(def->name);
  }
  EXPECT_TRUE(missing.empty()) << "ops without a gradcheck sample: "
                               << fmt::format("{}", fmt::join(missing, ", "));
}

class GradcheckOp : public ::testing::TestWithParam<size_t> {};

TEST_P(GradcheckOp, MatchesFiniteDifferences) {
  std::vector<OpSample> samples = all_samples();
  const OpSample& s = samples.at(GetParam());
  GradcheckResult r = gradcheck(s);
  EXPECT_LE(r.max_error, 1e-6) << s.op << " (" << s.label << "): " << r.worst;
}

INSTANTIATE_TEST_SUITE_P(Registry, GradcheckOp, ::testing::Range<size_t>(0, all_samples().size()),
                         [](const ::testing::TestParamInfo<size_t>& param_info) {
                           OpSample s = all_samples().at(param_info.param);
                           std::string name = s.op + "_" + s.label;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name + "_" + std::to_string(param_info.param);
                         });

}  // namespace
}  // namespace remat::testing
