#include "distributed/process_group.h"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "autograd/ops.h"
#include "kernels/kernels.h"
#include "runtime/grad_mode.h"

#ifdef KASMINA_WITH_NCCL
#include "distributed/nccl_process_group.h"
#endif

namespace kasmina::dist {

const char* reduce_op_name(ReduceOp op) {
    switch (op) {
        case ReduceOp::sum: return "sum";
        case ReduceOp::average: return "average";
        case ReduceOp::max: return "max";
        case ReduceOp::min: return "min";
    }
    return "?";
}

bool nccl_available() {
#ifdef KASMINA_WITH_NCCL
    return true;
#else
    return false;
#endif
}

// ---- ProcessGroup ------------------------------------------------------------------------------------

ProcessGroup::ProcessGroup(int rank, int world_size) : rank_(rank), world_size_(world_size) {
    if (world_size < 1 || rank < 0 || rank >= world_size)
        raise<DistributedError>("ProcessGroup", "rank ", rank, " is not in a world of size ", world_size);
}

void ProcessGroup::check_tensor(const char* op, const Tensor& tensor) const {
    if (!tensor.defined()) raise<DistributedError>(op, "got an undefined tensor");
    if (tensor.device() != device())
        raise<DeviceError>(op, "rank ", rank_, " of the ", backend(), " group works on ", device().str(), ", got ", tensor.describe());
    if (!tensor.is_contiguous()) raise<DistributedError>(op, "needs a contiguous tensor, got ", tensor.describe(), " with strides ",
                                                          shape_str(tensor.strides()));
}

void ProcessGroup::check_root(const char* op, int root) const {
    if (root < 0 || root >= world_size_) raise<DistributedError>(op, "root ", root, " is not a rank of a world of size ", world_size_);
}

std::shared_ptr<Work> ProcessGroup::broadcast_coalesced(const std::vector<Tensor>& tensors, int root) {
    std::shared_ptr<Work> last;
    for (const Tensor& tensor : tensors) last = broadcast(tensor, root);
    return last;
}

std::vector<uint8_t> ProcessGroup::broadcast_bytes(const std::vector<uint8_t>& bytes, int root) {
    check_root("broadcast_bytes", root);
    NoGradGuard no_grad;
    Tensor length = Tensor::from_vector<int64_t>({static_cast<int64_t>(bytes.size())}, {1}).to(device());
    broadcast(length, root)->wait();
    const int64_t size = length.to(Device::cpu()).item<int64_t>();
    if (size < 0 || size > (int64_t{1} << 32)) raise<DistributedError>("broadcast_bytes", "received a length of ", size, " bytes");
    if (size == 0) return {};
    Tensor content = rank() == root ? Tensor::from_vector<uint8_t>(bytes, {size}).to(device())
                                    : Tensor::zeros({size}, {.dtype = DType::u8, .device = device()});
    broadcast(content, root)->wait();
    return content.to(Device::cpu()).to_vector<uint8_t>();
}

std::vector<int64_t> ProcessGroup::all_gather_flags(int64_t flag) {
    NoGradGuard no_grad;
    std::vector<int64_t> one_hot(static_cast<size_t>(world_size_), 0);
    one_hot[static_cast<size_t>(rank_)] = flag;
    Tensor flags = Tensor::from_vector<int64_t>(one_hot, {world_size_}).to(device());
    all_reduce(flags, ReduceOp::sum)->wait();
    return flags.to(Device::cpu()).to_vector<int64_t>();
}

// ---- ThreadProcessGroup --------------------------------------------------------------------------------

namespace {
class CompletedWork final : public Work {
public:
    void wait() override {}
    bool completed() const override { return true; }
};

std::string signature(const char* op, const Tensor& tensor, const std::string& detail) {
    return make_message(op, "(", detail, ") ", tensor.describe());
}
}  // namespace

struct ThreadProcessGroup::Rendezvous {
    int world_size = 0;
    std::chrono::milliseconds timeout;
    std::mutex mutex;
    std::condition_variable completed;
    uint64_t generation = 0;  // collectives completed so far
    int arrived = 0;
    std::vector<Tensor> tensors;
    std::vector<std::string> signatures;
    std::string error;   // of the last completed collective ("" when it succeeded)
    std::string broken;  // set when a rank timed out: the group is unusable afterwards

    // Rank `rank` takes part in one collective; the last to arrive checks that every rank issued the
    // same one and runs `combine` over all ranks' tensors.
    void meet(int rank, const std::string& what, const Tensor& tensor, const std::function<void(std::vector<Tensor>&)>& combine) {
        std::unique_lock lock(mutex);
        if (!broken.empty()) raise<DistributedError>(what.c_str(), "the group is unusable: ", broken);
        const uint64_t mine = generation;
        tensors[static_cast<size_t>(rank)] = tensor;
        signatures[static_cast<size_t>(rank)] = what;
        if (++arrived == world_size) {
            error.clear();
            for (int r = 1; r < world_size; ++r)
                if (signatures[static_cast<size_t>(r)] != signatures[0]) {
                    error = "ranks issued different collectives:";
                    for (int s = 0; s < world_size; ++s) error += make_message(" rank ", s, ": ", signatures[static_cast<size_t>(s)], ";");
                    break;
                }
            if (error.empty()) {
                try {
                    NoGradGuard no_grad;
                    combine(tensors);
                } catch (const std::exception& failure) {
                    error = failure.what();
                }
            }
            for (Tensor& held : tensors) held = Tensor();
            arrived = 0;
            ++generation;
            completed.notify_all();
        } else if (!completed.wait_for(lock, timeout, [&] { return generation != mine || !broken.empty(); })) {
            std::string present;
            for (int r = 0; r < world_size; ++r)
                if (tensors[static_cast<size_t>(r)].defined()) present += make_message(" ", r);
            broken = make_message("rank ", rank, " waited ", timeout.count(), " ms in ", what, "; ranks present:", present);
            completed.notify_all();
            raise<DistributedError>(what.c_str(), "timed out: ", broken);
        }
        if (generation == mine) raise<DistributedError>(what.c_str(), "the group is unusable: ", broken);
        if (!error.empty()) raise<DistributedError>(what.c_str(), error);
    }
};

std::vector<std::shared_ptr<ProcessGroup>> ThreadProcessGroup::create(int world_size, std::chrono::milliseconds timeout) {
    if (world_size < 1) raise<DistributedError>("ThreadProcessGroup", "world size must be at least 1, got ", world_size);
    auto rendezvous = std::make_shared<Rendezvous>();
    rendezvous->world_size = world_size;
    rendezvous->timeout = timeout;
    rendezvous->tensors.resize(static_cast<size_t>(world_size));
    rendezvous->signatures.resize(static_cast<size_t>(world_size));
    std::vector<std::shared_ptr<ProcessGroup>> groups;
    for (int rank = 0; rank < world_size; ++rank) groups.push_back(std::make_shared<ThreadProcessGroup>(rank, world_size, rendezvous));
    return groups;
}

ThreadProcessGroup::ThreadProcessGroup(int rank, int world_size, std::shared_ptr<Rendezvous> rendezvous)
    : ProcessGroup(rank, world_size), rendezvous_(std::move(rendezvous)) {}

std::shared_ptr<Work> ThreadProcessGroup::all_reduce(const Tensor& tensor, ReduceOp op) {
    check_tensor("all_reduce", tensor);
    if (op == ReduceOp::average && !is_floating(tensor.dtype()))
        raise<DTypeError>("all_reduce", "average needs a floating tensor, got ", tensor.describe());
    const int world = world_size();
    rendezvous_->meet(rank(), signature("all_reduce", tensor, reduce_op_name(op)), tensor, [op, world](std::vector<Tensor>& all) {
        // Rank order, so every rank (and every run) gets the same bits.
        Tensor result = all[0].clone();
        for (size_t r = 1; r < all.size(); ++r) {
            if (op == ReduceOp::sum || op == ReduceOp::average) kernels::add_into(result, all[r]);
            else if (op == ReduceOp::max) copy_into(result, maximum(result, all[r]));
            else copy_into(result, minimum(result, all[r]));
        }
        if (op == ReduceOp::average) copy_into(result, result / static_cast<double>(world));
        for (Tensor& each : all) copy_into(each, result);
    });
    return std::make_shared<CompletedWork>();
}

std::shared_ptr<Work> ThreadProcessGroup::broadcast(const Tensor& tensor, int root) {
    check_tensor("broadcast", tensor);
    check_root("broadcast", root);
    rendezvous_->meet(rank(), signature("broadcast", tensor, make_message("root ", root)), tensor, [root](std::vector<Tensor>& all) {
        const Tensor source = all[static_cast<size_t>(root)].clone();
        for (Tensor& each : all) copy_into(each, source);
    });
    return std::make_shared<CompletedWork>();
}

void ThreadProcessGroup::barrier() {
    const Tensor token = Tensor::zeros({1});
    rendezvous_->meet(rank(), "barrier", token, [](std::vector<Tensor>&) {});
}

// ---- launch environment ----------------------------------------------------------------------------------

namespace {
const char* variable(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? value : nullptr;
}

int integer_variable(const char* name, int low, int high, std::optional<int> fallback) {
    const char* text = variable(name);
    if (text == nullptr) {
        if (fallback) return *fallback;
        raise<DistributedError>("init_process_group", "the environment variable ", name, " is not set (a launcher such as "
                                "`kasmina-train --nproc N` or torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)");
    }
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < low || value > high)
        raise<DistributedError>("init_process_group", name, "='", text, "' is not an integer in [", low, ", ", high, "]");
    return static_cast<int>(value);
}
}  // namespace

bool LaunchEnvironment::present() { return variable("WORLD_SIZE") != nullptr; }

LaunchEnvironment LaunchEnvironment::from_environment() {
    LaunchEnvironment environment;
    environment.world_size = integer_variable("WORLD_SIZE", 1, 1 << 20, std::nullopt);
    environment.rank = integer_variable("RANK", 0, environment.world_size - 1, std::nullopt);
    environment.local_rank = integer_variable("LOCAL_RANK", 0, 1 << 20, environment.rank);
    if (const char* address = variable("MASTER_ADDR")) environment.master_address = address;
    environment.master_port = integer_variable("MASTER_PORT", 1, 65535, environment.world_size == 1 ? std::optional<int>(29500) : std::nullopt);
    environment.timeout = std::chrono::seconds(integer_variable("KASMINA_DIST_TIMEOUT", 1, 86400, 300));
    return environment;
}

std::shared_ptr<ProcessGroup> init_process_group(const LaunchEnvironment& environment, const std::string& backend) {
    if (backend != "nccl") raise<DistributedError>("init_process_group", "unknown backend '", backend, "' (this build offers nccl)");
#ifdef KASMINA_WITH_NCCL
    auto store = std::make_shared<TcpStore>(environment.master_address, environment.master_port, environment.rank == 0,
                                            environment.timeout);
    return std::make_shared<NcclProcessGroup>(store, environment.rank, environment.world_size, environment.local_rank,
                                              NcclOptions{.timeout = environment.timeout});
#else
    raise<DistributedError>("init_process_group", "kasmina was built without NCCL (configure with CUDA and NCCL found; "
                            "set KASMINA_NCCL_ROOT to its prefix)");
#endif
}

}  // namespace kasmina::dist
