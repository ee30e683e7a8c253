// Tensors: factories, views sharing storage, contiguous copies, conversions, read-back, errors.
#include "test_util.h"

using namespace kasmina;
using kasmina::testing::expect_values;

TEST(TensorFactories, ZerosOnesFullHaveShapeDtypeAndValues) {
    const Tensor zeros = Tensor::zeros({2, 3});
    EXPECT_EQ(zeros.shape(), (Shape{2, 3}));
    EXPECT_EQ(zeros.dtype(), DType::f32);
    expect_values(zeros, std::vector<double>(6, 0.0));
    expect_values(Tensor::ones({4}, {.dtype = DType::f64}), {1, 1, 1, 1});
    const Tensor full = Tensor::full({2}, 7.5, {.dtype = DType::i32});
    EXPECT_EQ(full.dtype(), DType::i32);
    expect_values(full, {7, 7});
}

TEST(TensorFactories, ArangeMatchesTorchArange) {
    expect_values(Tensor::arange(5), {0, 1, 2, 3, 4});
    expect_values(Tensor::arange(1.0, 2.0, 0.25, {.dtype = DType::f32}), {1.0, 1.25, 1.5, 1.75});
    EXPECT_EQ(Tensor::arange(0.0, -3.0, -1.0).numel(), 3);
}

TEST(TensorFactories, FromVectorRoundTripsEveryDtype) {
    expect_values(Tensor::from_vector<float>({1.5f, -2.f}, {2}), {1.5, -2});
    expect_values(Tensor::from_vector<double>({1e-300, 3.0}, {2}), {1e-300, 3.0});
    expect_values(Tensor::from_vector<int64_t>({1LL << 40, -3}, {2}), {double(1LL << 40), -3});
    expect_values(Tensor::from_vector<int32_t>({5, 6}, {2}), {5, 6});
    expect_values(Tensor::from_vector<uint8_t>({255, 0}, {2}), {255, 0});
    expect_values(Tensor::from_vector<bool>({true, false}, {2}), {1, 0});
}

TEST(TensorFactories, FromVectorRejectsWrongCount) {
    EXPECT_THROW_WITH(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), ShapeError, "3 values for shape [2, 2]");
}

TEST(TensorFactories, NegativeShapeIsRejected) {
    EXPECT_THROW_WITH(Tensor::empty({2, -1}), ShapeError, "negative dimension");
}

TEST(TensorFactories, RandIsReproducibleForASeedAndInRange) {
    Generator a(42), b(42);
    const std::vector<float> first = Tensor::rand({1000}, {}, &a).to_vector<float>();
    const std::vector<float> second = Tensor::rand({1000}, {}, &b).to_vector<float>();
    EXPECT_EQ(first, second);
    for (float v : first) {
        EXPECT_GE(v, 0.f);
        EXPECT_LT(v, 1.f);
    }
}

TEST(TensorFactories, RandnHasStandardNormalMoments) {
    Generator generator(3);
    const Tensor samples = Tensor::randn({200000}, {.dtype = DType::f64}, &generator);
    EXPECT_NEAR(mean(samples).item(), 0.0, 0.01);
    EXPECT_NEAR(var(samples).item(), 1.0, 0.02);
}

TEST(TensorFactories, ConsecutiveDrawsEqualOneLargerDraw) {
    // Counter-based: element i of a draw depends only on (seed, offset + i).
    Generator split(9), whole(9);
    const std::vector<double> a = Tensor::rand({3}, {.dtype = DType::f64}, &split).to_vector<double>();
    const std::vector<double> b = Tensor::rand({5}, {.dtype = DType::f64}, &split).to_vector<double>();
    const std::vector<double> all = Tensor::rand({8}, {.dtype = DType::f64}, &whole).to_vector<double>();
    std::vector<double> joined = a;
    joined.insert(joined.end(), b.begin(), b.end());
    EXPECT_EQ(joined, all);
}

TEST(TensorViews, TransposeSharesStorageAndSwapsStrides) {
    const Tensor x = Tensor::arange(6).reshape({2, 3});
    const Tensor t = x.t();
    EXPECT_TRUE(t.same_storage(x));
    EXPECT_EQ(t.shape(), (Shape{3, 2}));
    EXPECT_EQ(t.strides(), (Shape{1, 3}));
    EXPECT_FALSE(t.is_contiguous());
    expect_values(t, {0, 3, 1, 4, 2, 5});
}

TEST(TensorViews, ContiguousCopiesOnlyWhenNeeded) {
    const Tensor x = Tensor::arange(6).reshape({2, 3});
    EXPECT_TRUE(x.contiguous().same_storage(x));
    const Tensor copy = x.t().contiguous();
    EXPECT_FALSE(copy.same_storage(x));
    EXPECT_TRUE(copy.is_contiguous());
    expect_values(copy, {0, 3, 1, 4, 2, 5});
}

TEST(TensorViews, ReshapeIsAViewWhenStridesAllowOtherwiseACopy) {
    const Tensor x = Tensor::arange(24).reshape({2, 3, 4});
    EXPECT_TRUE(x.reshape({6, 4}).same_storage(x));
    EXPECT_TRUE(x.reshape({-1}).same_storage(x));
    const Tensor permuted = x.permute({2, 0, 1});
    EXPECT_TRUE(permuted.reshape({4, 6}).same_storage(x));  // dims 1-2 of the permutation stay mergeable
    EXPECT_FALSE(permuted.reshape({24}).same_storage(x));
    expect_values(permuted.reshape({24}).slice(0, 0, 6), {0, 4, 8, 12, 16, 20});
    EXPECT_THROW_WITH(permuted.view({24}), ShapeError, "use reshape()");
}

TEST(TensorViews, SliceNarrowSelectShareStorage) {
    const Tensor x = Tensor::arange(20).reshape({4, 5});
    expect_values(x.slice(1, 1, 5, 2), {1, 3, 6, 8, 11, 13, 16, 18});
    expect_values(x.narrow(0, 2, 2), {10, 11, 12, 13, 14, 15, 16, 17, 18, 19});
    expect_values(x.select(1, -1), {4, 9, 14, 19});
    EXPECT_TRUE(x.select(1, 2).same_storage(x));
    EXPECT_THROW_WITH(x.narrow(0, 3, 2), ShapeError, "outside dimension 0 of size 4");
    EXPECT_THROW_WITH(x.select(0, 4), ShapeError, "index 4 out of range");
}

TEST(TensorViews, UnsqueezeSqueezeExpand) {
    const Tensor x = Tensor::arange(3);
    EXPECT_EQ(x.unsqueeze(0).shape(), (Shape{1, 3}));
    EXPECT_EQ(x.unsqueeze(-1).shape(), (Shape{3, 1}));
    EXPECT_EQ(x.unsqueeze(0).unsqueeze(2).squeeze().shape(), (Shape{3}));
    const Tensor expanded = x.unsqueeze(0).expand({2, -1});
    EXPECT_EQ(expanded.strides(), (Shape{0, 1}));
    expect_values(expanded, {0, 1, 2, 0, 1, 2});
    EXPECT_THROW_WITH(x.expand({2, 4}), ShapeError, "cannot expand [3] to [2, 4]");
}

TEST(TensorViews, WritesThroughAViewAreVisibleInTheBase) {
    Tensor x = Tensor::zeros({2, 3});
    const uint64_t before = x.version();
    x.select(0, 1).fill_(5.0);
    expect_values(x, {0, 0, 0, 5, 5, 5});
    EXPECT_EQ(x.version(), before + 1);
}

TEST(TensorConversions, ToDtypeConvertsValues) {
    const Tensor x = Tensor::from_vector<float>({1.7f, -2.2f}, {2});
    expect_values(x.to(DType::i64), {1, -2});
    expect_values(x.to(DType::f64), {1.7, -2.2}, 1e-6);
    EXPECT_EQ(x.to(DType::f32).impl(), x.impl());  // same dtype: no copy
}

TEST(TensorConversions, ItemNeedsExactlyOneElement) {
    EXPECT_DOUBLE_EQ(Tensor::scalar(3.5).item(), 3.5);
    EXPECT_EQ(Tensor::full({1, 1}, 2.0, {.dtype = DType::i64}).item<int64_t>(), 2);
    EXPECT_THROW_WITH(Tensor::zeros({2}).item(), ShapeError, "exactly one element");
}

TEST(TensorConversions, DataPointerChecksDtype) {
    const Tensor x = Tensor::zeros({2});
    EXPECT_NE(x.data<float>(), nullptr);
    EXPECT_THROW_WITH(x.data<double>(), DTypeError, "tensor is float32, requested float64");
}

TEST(TensorPrinting, ShowsValuesDtypeAndShape) {
    std::ostringstream stream;
    stream << Tensor::arange(4).reshape({2, 2});
    EXPECT_NE(stream.str().find("[[0, 1],"), std::string::npos) << stream.str();
    EXPECT_NE(stream.str().find("dtype=int64, shape=[2, 2]"), std::string::npos) << stream.str();
}

TEST(TensorStorage, CpuStorageIs64ByteAligned) {
    for (int64_t n : {1, 3, 17, 1000}) {
        const Tensor x = Tensor::empty({n});
        EXPECT_EQ(reinterpret_cast<uintptr_t>(x.raw_data()) % 64, 0u);
    }
}

TEST(TensorDevices, ParseDeviceNames) {
    EXPECT_EQ(Device::parse("cpu"), Device::cpu());
    EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
    EXPECT_THROW_WITH(Device::parse("tpu"), DeviceError, "unknown device 'tpu'");
}

TEST(TensorDevices, CudaRoundTripWhenAvailable) {
    if (!cuda_is_available()) GTEST_SKIP() << "no CUDA device";
    const Tensor x = Tensor::randn({3, 5});
    const Tensor on_gpu = x.to(Device::cuda());
    EXPECT_TRUE(on_gpu.device().is_cuda());
    const Tensor transposed_back = on_gpu.t().contiguous().to(Device::cpu());
    kasmina::testing::expect_tensors_close(transposed_back, x.t().contiguous(), 0);
    expect_values(Tensor::full({4}, 2.5, {.device = Device::cuda()}), {2.5, 2.5, 2.5, 2.5});
    expect_values(on_gpu.to(DType::f64).to(Device::cpu()), x.to_vector<double>(), 0);
}

TEST(TensorDevices, UnavailableCudaDeviceRaises) {
    const int count = cuda_device_count();
    EXPECT_THROW_WITH(Tensor::zeros({2}, {.device = Device::cuda(count)}), DeviceError, "is not available");
}
