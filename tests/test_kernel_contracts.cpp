// The kernel tables' contiguity contracts (kernels/<family>.h): the ops make
// strided inputs contiguous before calling a kernel, so a strided input gives
// the contiguous result bit for bit, and a kernel handed a strided operand
// directly refuses it, naming itself.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/conv.h"
#include "kernels/embedding.h"
#include "kernels/loss.h"
#include "kernels/normalization.h"
#include "kernels/optimizer.h"
#include "kernels/pool.h"
#include "ops/optimizer.h"
#include "remat/remat.h"
#include "support/error_message.h"

namespace remat {
namespace {

// x's values as a tensor whose last two dims are laid out transposed.
Tensor strided_copy(const Tensor& x) { return x.transpose(-1, -2).contiguous().transpose(-1, -2); }

void expect_same_values(const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.shape(), want.shape());
  EXPECT_EQ(got.contiguous().to_vector<float>(), want.contiguous().to_vector<float>());
}

TEST(KernelContracts, StridedInputsGiveTheContiguousResults) {
  const Tensor x = randn({2, 3, 5, 5});
  const Tensor xs = strided_copy(x);
  ASSERT_FALSE(xs.is_contiguous());
  const Tensor w = randn({4, 3, 3, 3}), bias = randn({4});
  expect_same_values(conv2d(xs, strided_copy(w), bias), conv2d(x, w, bias));
  expect_same_values(max_pool2d(xs, {2, 2}), max_pool2d(x, {2, 2}));
  expect_same_values(avg_pool2d(xs, {2, 2}), avg_pool2d(x, {2, 2}));
  expect_same_values(adaptive_avg_pool2d(xs, {2, 3}), adaptive_avg_pool2d(x, {2, 3}));

  const Tensor rows = randn({4, 6}), rows_strided = strided_copy(rows);
  const Tensor affine = randn({6});
  expect_same_values(layer_norm(rows_strided, affine, affine), layer_norm(rows, affine, affine));
  const Tensor table = randn({6, 4}), indices = from_vector<int64_t>({5, 0, 3, 3}, {4});
  expect_same_values(embedding(strided_copy(table), indices), embedding(table, indices));
  const Tensor targets = from_vector<int64_t>({1, 5, 0, 2}, {4});
  expect_same_values(cross_entropy(rows_strided, targets), cross_entropy(rows, targets));
  // Every other element of a pair: a strided 1-d bias, and running statistics.
  const auto every_other = [](const Tensor& pairs, int64_t first) {
    return pairs.as_strided({pairs.numel() / 2}, {2}, pairs.offset() + first);
  };
  const Tensor bias_strided = every_other(randn({8}), 1);
  ASSERT_FALSE(bias_strided.is_contiguous());
  expect_same_values(matmul(rows_strided, table, bias_strided),
                     matmul(rows, table, bias_strided.contiguous()));

  // Eval batch_norm reads strided running statistics where they are.
  const Tensor stats = exp(randn({6}));
  const Tensor mean_strided = every_other(stats, 0), var_strided = every_other(stats, 1);
  expect_same_values(batch_norm(xs, mean_strided, var_strided, Tensor(), Tensor(), false),
                     batch_norm(x, mean_strided.contiguous(), var_strided.contiguous(), Tensor(),
                                Tensor(), false));
  EXPECT_EQ(ops::vector_norm("test", rows_strided, 2), ops::vector_norm("test", rows, 2));
}

TEST(KernelContracts, CpuKernelsRefuseStridedOperands) {
  const Tensor x = strided_copy(randn({1, 2, 4, 4}));
  const auto refuses = [](const char* kernel, auto&& call) {
    const std::string message = testing::error_message(call);
    EXPECT_NE(message.find(kernel), std::string::npos) << message;
    EXPECT_NE(message.find("contiguous"), std::string::npos) << message;
  };
  refuses("conv2d", [&] {
    kernels::cpu::conv_kernels.conv2d(x, randn({2, 2, 1, 1}), Tensor(), {},
                                      Tensor::empty({1, 2, 4, 4}));
  });
  refuses("avg_pool2d", [&] {
    kernels::cpu::pool_kernels.avg_pool2d(x, {.kernel_h = 2, .kernel_w = 2},
                                          Tensor::empty({1, 2, 2, 2}));
  });
  refuses("layer_norm", [&] {
    const Tensor rows = strided_copy(randn({4, 6}));
    kernels::cpu::normalization_kernels.layer_norm(rows, Tensor(), Tensor(), 1, 1e-5,
                                                   Tensor::empty({4, 6}), Tensor::empty({4, 1}),
                                                   Tensor::empty({4, 1}));
  });
  refuses("embedding", [&] {
    kernels::cpu::embedding_kernels.forward(strided_copy(randn({6, 4})),
                                            from_vector<int64_t>({1}, {1}), Tensor::empty({1, 4}));
  });
  refuses("cross_entropy", [&] {
    kernels::cpu::loss_kernels.cross_entropy(strided_copy(randn({4, 6})),
                                             from_vector<int64_t>({0, 1, 2, 3}, {4}), -100,
                                             Tensor::empty({}), Tensor::empty({4}));
  });
  refuses("vector_norm", [&] {
    kernels::cpu::optimizer_kernels.vector_norm(strided_copy(randn({4, 6})), 2);
  });
}

}  // namespace
}  // namespace remat
