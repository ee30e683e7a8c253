// Helpers shared by the test suites: value comparison, random float64 inputs for gradient checks,
// an assertion that an exception of a type is thrown with a message containing given text, and the
// GPU tests' device and skip.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kasmina.h"

namespace kasmina::testing {

inline void expect_values(const Tensor& actual, const std::vector<double>& expected, double tolerance = 1e-6) {
    const std::vector<double> values = actual.to_vector<double>();
    ASSERT_EQ(values.size(), expected.size()) << "tensor " << actual.describe();
    for (size_t i = 0; i < values.size(); ++i) {
        if (std::isnan(expected[i])) {
            EXPECT_TRUE(std::isnan(values[i])) << "element " << i;
            continue;
        }
        if (std::isinf(expected[i])) {
            EXPECT_EQ(values[i], expected[i]) << "element " << i;
            continue;
        }
        EXPECT_NEAR(values[i], expected[i], tolerance * std::max(1.0, std::abs(expected[i]))) << "element " << i;
    }
}

// The device of the GPU tests; each of them starts with REQUIRE_GPU() (skips without one).
inline const Device kGpu = Device::cuda(0);

// randn of `shape` and `dtype` on the CPU.
inline Tensor randn(const Shape& shape, DType dtype = DType::f32) { return Tensor::randn(shape, {.dtype = dtype}); }

// Sets every element of `module`'s parameter `name` (e.g. "seeds.0.w0") to `value`, outside autograd.
inline void fill_parameter(nn::Module& module, const std::string& name, double value) {
    NoGradGuard no_grad;
    for (auto& [parameter, tensor] : module.named_parameters())
        if (parameter == name) tensor.fill_(value);
}

inline void expect_tensors_close(const Tensor& actual, const Tensor& expected, double tolerance = 1e-6) {
    ASSERT_EQ(actual.shape(), expected.shape());
    expect_values(actual, expected.to_vector<double>(), tolerance);
}

// A float64 leaf requiring grad, values from randn scaled by `scale` (+ `shift`).
inline Tensor random_leaf(const Shape& shape, double scale = 1.0, double shift = 0.0) {
    Tensor t;
    {
        NoGradGuard no_grad;
        t = Tensor::randn(shape, {.dtype = DType::f64}) * scale + shift;
    }
    return t.set_requires_grad(true);
}

// A non-contiguous float64 leaf of `shape`: the transpose of a dense [.., b, a] tensor.
inline Tensor random_transposed_leaf(const Shape& shape) {
    Shape swapped = shape;
    std::swap(swapped[swapped.size() - 1], swapped[swapped.size() - 2]);
    Tensor dense;
    {
        NoGradGuard no_grad;
        dense = Tensor::randn(swapped, {.dtype = DType::f64});
    }
    Tensor view = detail::make_view(dense, shape,
                                    [&] {
                                        Shape strides = dense.strides();
                                        std::swap(strides[strides.size() - 1], strides[strides.size() - 2]);
                                        return strides;
                                    }(),
                                    0);
    return view.set_requires_grad(true);
}

}  // namespace kasmina::testing

#define REQUIRE_GPU() \
    if (!::kasmina::cuda_is_available()) GTEST_SKIP() << "no CUDA device"

// EXPECT that `statement` throws `type` whose what() contains `text`.
#define EXPECT_THROW_WITH(statement, type, text)                                                  \
    do {                                                                                          \
        try {                                                                                     \
            statement;                                                                            \
            ADD_FAILURE() << "expected " #type " containing \"" << (text) << "\", nothing thrown"; \
        } catch (const type& error) {                                                             \
            EXPECT_NE(std::string(error.what()).find(text), std::string::npos)                    \
                << "message was: " << error.what();                                               \
        }                                                                                         \
    } while (0)

// EXPECT that gradcheck(function, inputs...) passes, printing the first mismatch otherwise.
#define EXPECT_GRADCHECK(function, ...)                                  \
    do {                                                                 \
        const GradcheckResult result = gradcheck(function, __VA_ARGS__); \
        EXPECT_TRUE(result.passed) << result.message;                    \
    } while (0)
