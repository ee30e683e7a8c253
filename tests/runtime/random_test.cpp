// The counter-based generator: Philox 4x32-10 known-answer vectors (Random123) and stream behaviour.
#include <thread>

#include "test_util.h"

using namespace kasmina;

TEST(Philox, MatchesKnownAnswerVectors) {
    const PhiloxWords zeros = philox4x32(0, 0, 0, 0, 0, 0);
    EXPECT_EQ(zeros.word[0], 0x6627e8d5u);
    EXPECT_EQ(zeros.word[1], 0xe169c58du);
    EXPECT_EQ(zeros.word[2], 0xbc57ac4cu);
    EXPECT_EQ(zeros.word[3], 0x9b00dbd8u);
    const PhiloxWords ones = philox4x32(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
    EXPECT_EQ(ones.word[0], 0x408f276du);
    EXPECT_EQ(ones.word[1], 0x41c83b0eu);
    EXPECT_EQ(ones.word[2], 0xa20bc7c6u);
    EXPECT_EQ(ones.word[3], 0x6d5451fdu);
    const PhiloxWords pi = philox4x32(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
    EXPECT_EQ(pi.word[0], 0xd16cfe09u);
    EXPECT_EQ(pi.word[1], 0x94fdccebu);
    EXPECT_EQ(pi.word[2], 0x5001e420u);
    EXPECT_EQ(pi.word[3], 0x24126ea1u);
}

TEST(Generator, ReserveAdvancesTheOffset) {
    Generator generator(1);
    EXPECT_EQ(generator.reserve(10), 0u);
    EXPECT_EQ(generator.reserve(5), 10u);
    EXPECT_EQ(generator.offset(), 15u);
    generator.manual_seed(2);
    EXPECT_EQ(generator.offset(), 0u);
}

TEST(Generator, DifferentSeedsGiveDifferentStreams) {
    Generator a(1), b(2);
    EXPECT_NE(Tensor::rand({16}, {}, &a).to_vector<float>(), Tensor::rand({16}, {}, &b).to_vector<float>());
}

TEST(Generator, ManualSeedResetsTheDefaultGenerator) {
    manual_seed(123);
    const auto first = Tensor::randn({8}).to_vector<float>();
    manual_seed(123);
    EXPECT_EQ(Tensor::randn({8}).to_vector<float>(), first);
}

TEST(Generator, ScopedDefaultGeneratorRedirectsOnlyThisThreadWhileItLives) {
    manual_seed(5);
    const uint64_t before = default_generator().offset();
    Generator scratch(99);
    std::vector<float> redirected, elsewhere;
    {
        const ScopedDefaultGenerator use(scratch);
        redirected = Tensor::rand({8}).to_vector<float>();
        // Another thread still draws from the process-wide stream.
        std::thread other([&] { elsewhere = Tensor::rand({8}).to_vector<float>(); });
        other.join();
    }
    Generator reference(99);
    EXPECT_EQ(redirected, Tensor::rand({8}, {}, &reference).to_vector<float>());
    EXPECT_EQ(scratch.offset(), 8u);
    EXPECT_EQ(default_generator().offset(), before + 8);  // only the other thread's draw
    Generator process_stream(5);
    process_stream.set_offset(before);
    EXPECT_EQ(elsewhere, Tensor::rand({8}, {}, &process_stream).to_vector<float>());
    EXPECT_EQ(&default_generator(), &default_generator());  // back to the process-wide one
}
