// The LibTorch peer (Debian's libtorch 1.13, CPU): the standard-layer workloads on the shapes
// kasmina-bench passes, forward (no grad) and forward + backward (sum of outputs), median of repeated
// runs in microseconds, written in the kasmina-bench/1 JSON schema (as bench/peer_layers.py does).
// Built only when CMake finds Torch. Usage:
//   kasmina-peer-libtorch [--threads N] [--json FILE] NAME=AxB[xC...][:HEADS] ...
//   e.g. linear=256x512 conv2d=8x32x32x32 mha=8x64x256:8 layernorm=2048x512
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace {

struct Workload {
    std::string name;
    std::vector<int64_t> shape;
    int64_t heads = 1;
};

struct Timing {
    double median = 0, p10 = 0, p90 = 0;
    size_t samples = 0;
};

Workload parse_workload(const std::string& text) {
    const size_t equals = text.find('=');
    if (equals == std::string::npos) throw std::runtime_error("expected NAME=AxB..., got " + text);
    Workload w{text.substr(0, equals), {}};
    std::string dims = text.substr(equals + 1);
    const size_t colon = dims.find(':');
    if (colon != std::string::npos) {
        w.heads = std::stoll(dims.substr(colon + 1));
        dims = dims.substr(0, colon);
    }
    size_t start = 0;
    while (start <= dims.size()) {
        const size_t x = dims.find('x', start);
        w.shape.push_back(std::stoll(dims.substr(start, x == std::string::npos ? std::string::npos : x - start)));
        if (x == std::string::npos) break;
        start = x + 1;
    }
    return w;
}

// Warm-up, then samples until 0.5 s and at least 20 have passed (the Python peer's rule).
Timing time_us(const std::function<void()>& run) {
    for (int i = 0; i < 5; ++i) run();
    std::vector<double> samples;
    const auto begin = std::chrono::steady_clock::now();
    while (samples.size() < 20 || std::chrono::steady_clock::now() - begin < std::chrono::milliseconds(500)) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        samples.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(samples.begin(), samples.end());
    auto pick = [&](double q) { return samples[static_cast<size_t>(q * (samples.size() - 1) + 0.5)]; };
    const size_t n = samples.size();
    const double median = n % 2 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
    return {median, pick(0.1), pick(0.9), n};
}

// The module and its call for a workload; sizes follow from the input shape as in kasmina-bench.
std::pair<torch::nn::AnyModule, std::function<torch::Tensor(const torch::Tensor&)>> make(const Workload& w,
                                                                                       torch::Tensor& input) {
    const auto& s = w.shape;
    if (w.name == "linear") {
        torch::nn::Linear m(s[1], s[1]);
        return {torch::nn::AnyModule(m), [m](const torch::Tensor& x) mutable { return m->forward(x); }};
    }
    if (w.name == "conv2d") {
        torch::nn::Conv2d m(torch::nn::Conv2dOptions(s[1], s[1], 3).padding(1));
        return {torch::nn::AnyModule(m), [m](const torch::Tensor& x) mutable { return m->forward(x); }};
    }
    if (w.name == "mha") {
        // LibTorch 1.13 has no batch_first: the input is laid out [L, B, E] once, outside the timing.
        torch::nn::MultiheadAttention m(torch::nn::MultiheadAttentionOptions(s[2], w.heads));
        input = input.transpose(0, 1).contiguous();
        return {torch::nn::AnyModule(m), [m](const torch::Tensor& x) mutable {
                    return std::get<0>(m->forward(x, x, x, {}, /*need_weights=*/false));
                }};
    }
    if (w.name == "layernorm") {
        torch::nn::LayerNorm m(torch::nn::LayerNormOptions({s[1]}));
        return {torch::nn::AnyModule(m), [m](const torch::Tensor& x) mutable { return m->forward(x); }};
    }
    if (w.name == "batchnorm2d") {
        torch::nn::BatchNorm2d m(s[1]);
        return {torch::nn::AnyModule(m), [m](const torch::Tensor& x) mutable { return m->forward(x); }};
    }
    if (w.name == "batchnorm1d") {
        torch::nn::BatchNorm1d m(s[1]);
        return {torch::nn::AnyModule(m), [m](const torch::Tensor& x) mutable { return m->forward(x); }};
    }
    throw std::runtime_error("unknown workload " + w.name);
}

std::string result_json(const std::string& workload, const char* pass, const Timing& t) {
    char text[512];
    std::snprintf(text, sizeof text,
                  "    {\"workload\": \"%s\", \"pass\": \"%s\", \"implementation\": \"libtorch\", \"median_us\": %.3f, "
                  "\"p10_us\": %.3f, \"p90_us\": %.3f, \"samples\": %zu}",
                  workload.c_str(), pass, t.median, t.p10, t.p90, t.samples);
    return text;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        int threads = 2;
        std::string json_path;
        std::vector<Workload> workloads;
        for (int i = 1; i < argc; ++i) {
            const std::string arg = argv[i];
            if (arg == "--threads" && i + 1 < argc) threads = std::stoi(argv[++i]);
            else if (arg == "--json" && i + 1 < argc) json_path = argv[++i];
            else workloads.push_back(parse_workload(arg));
        }
        torch::set_num_threads(threads);
        torch::manual_seed(1);
        std::printf("libtorch %s, cpu, %d threads\n", TORCH_VERSION, threads);
        std::vector<std::string> results;
        for (const Workload& w : workloads) {
            torch::Tensor x = torch::randn(w.shape);
            auto [module, forward] = make(w, x);
            module.ptr()->train();
            Timing fwd;
            {
                torch::NoGradGuard no_grad;
                fwd = time_us([&] { forward(x); });
            }
            torch::Tensor xg = x.clone().requires_grad_(true);
            const Timing both = time_us([&] {
                module.ptr()->zero_grad();
                xg.mutable_grad() = torch::Tensor();
                forward(xg).sum().backward();
            });
            std::printf("%-12s fwd %10.1f us   fwd+bwd %10.1f us\n", w.name.c_str(), fwd.median, both.median);
            results.push_back(result_json(w.name, "fwd", fwd));
            results.push_back(result_json(w.name, "fwd+bwd", both));
        }
        if (!json_path.empty()) {
            std::ofstream out(json_path);
            out << "{\n  \"schema\": \"kasmina-bench/1\", \"implementation\": \"libtorch\", \"implementation_version\": "
                   "\"libtorch " TORCH_VERSION "\", \"device\": \"cpu\", \"threads\": "
                << threads << ",\n  \"results\": [\n";
            for (size_t i = 0; i < results.size(); ++i) out << results[i] << (i + 1 < results.size() ? ",\n" : "\n");
            out << "  ]\n}\n";
        }
        return 0;
    } catch (const std::exception& error) {
        std::fprintf(stderr, "kasmina-peer-libtorch: %s\n", error.what());
        return 2;
    }
}
