#include "distributed/nccl_process_group.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/cuda_runtime.h"

namespace kasmina::dist {
namespace {

ncclDataType_t nccl_type(const char* op, const Tensor& tensor) {
    switch (tensor.dtype()) {
        case DType::f32: return ncclFloat32;
        case DType::f64: return ncclFloat64;
        case DType::i64: return ncclInt64;
        case DType::i32: return ncclInt32;
        case DType::u8:
        case DType::boolean: return ncclUint8;
    }
    raise<DTypeError>(op, "NCCL has no type for ", tensor.describe());
}

ncclRedOp_t nccl_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::sum: return ncclSum;
        case ReduceOp::average: return ncclAvg;
        case ReduceOp::max: return ncclMax;
        case ReduceOp::min: return ncclMin;
    }
    return ncclSum;
}

void check_nccl(ncclResult_t result, const char* op, const char* call, ncclComm_t comm = nullptr) {
    if (result == ncclSuccess || result == ncclInProgress) return;
    const char* detail = comm != nullptr ? ncclGetLastError(comm) : "";
    raise<DistributedError>(op, call, " failed: ", ncclGetErrorString(result), detail != nullptr && *detail ? " (" : "",
                            detail != nullptr ? detail : "", detail != nullptr && *detail ? ")" : "");
}

int next_group_number() {
    static std::atomic<int> groups{0};
    return groups.fetch_add(1);
}

}  // namespace

struct NcclProcessGroup::Communicator {
    ncclComm_t comm = nullptr;
    std::mutex mutex;
    std::condition_variable wake;
    struct Pending {
        std::shared_ptr<cuda::Event> done;
        std::chrono::steady_clock::time_point deadline;
        std::string what;
    };
    std::deque<Pending> pending;
    std::string error;  // why the communicator was aborted ("" while healthy)
    bool stopping = false;
    bool aborted = false;

    // Under `mutex`: records the failure and aborts, which makes NCCL kernels stuck on a dead peer exit.
    void fail(std::string reason) {
        if (aborted) return;
        error = std::move(reason);
        aborted = true;
        ncclCommAbort(comm);
    }
};

namespace {

class NcclWork final : public Work {
public:
    NcclWork(std::shared_ptr<NcclProcessGroup::Communicator> communicator, std::shared_ptr<cuda::Event> done, int device, std::string what)
        : communicator_(std::move(communicator)), done_(std::move(done)), device_(device), what_(std::move(what)) {}
    void wait() override {
        {
            std::lock_guard lock(communicator_->mutex);
            if (communicator_->aborted) raise<DistributedError>(what_.c_str(), "failed: ", communicator_->error);
        }
        done_->wait(cuda::current_stream(device_));
    }
    bool completed() const override { return done_->query(); }

private:
    std::shared_ptr<NcclProcessGroup::Communicator> communicator_;
    std::shared_ptr<cuda::Event> done_;
    int device_;
    std::string what_;
};

}  // namespace

NcclProcessGroup::NcclProcessGroup(std::shared_ptr<Store> store, int rank, int world_size, int device, NcclOptions options)
    : ProcessGroup(rank, world_size),
      device_(device),
      options_(options),
      store_(std::move(store)),
      communicator_(std::make_shared<Communicator>()),
      stream_(cuda::Stream::create(device)) {
    if (device < 0 || device >= cuda::device_count())
        raise<DeviceError>("NcclProcessGroup", "rank ", rank, " asked for cuda:", device, " but this process sees ", cuda::device_count(),
                           " GPU(s); LOCAL_RANK must name a visible GPU");
    cuda::DeviceGuard guard(device);
    const std::string key = make_message("kasmina/nccl/", next_group_number());
    ncclUniqueId id;
    if (rank == 0) {
        check_nccl(ncclGetUniqueId(&id), "NcclProcessGroup", "ncclGetUniqueId");
        store_->set(key + "/id", Bytes(reinterpret_cast<uint8_t*>(&id), reinterpret_cast<uint8_t*>(&id) + sizeof id));
    } else {
        const Bytes bytes = store_->get(key + "/id");
        if (bytes.size() != sizeof id) raise<DistributedError>("NcclProcessGroup", "the store holds a unique id of ", bytes.size(), " bytes");
        std::memcpy(&id, bytes.data(), sizeof id);
    }
    // Every rank is up before the (blocking) communicator init, so a missing rank is a store timeout.
    store_->add(key + "/arrived", 1);
    store_->wait_for_count(key + "/arrived", world_size);
    check_nccl(ncclCommInitRank(&communicator_->comm, world_size, id, rank), "NcclProcessGroup", "ncclCommInitRank");

    watchdog_ = std::thread([communicator = communicator_, device] {
        cudaSetDevice(device);
        std::unique_lock lock(communicator->mutex);
        while (!communicator->stopping) {
            communicator->wake.wait_for(lock, std::chrono::milliseconds(20));
            if (communicator->aborted) continue;
            ncclResult_t async_error = ncclSuccess;
            ncclCommGetAsyncError(communicator->comm, &async_error);
            if (async_error != ncclSuccess && async_error != ncclInProgress) {
                communicator->fail(make_message("NCCL reported ", ncclGetErrorString(async_error), " (", ncclGetLastError(communicator->comm),
                                                ")"));
                continue;
            }
            const auto now = std::chrono::steady_clock::now();
            while (!communicator->pending.empty()) {
                auto& front = communicator->pending.front();
                if (front.done->query()) {
                    communicator->pending.pop_front();
                } else {
                    if (now > front.deadline)
                        communicator->fail(make_message(front.what, " did not complete within the timeout (a rank died, hangs "
                                                                    "or issued a different collective); the communicator was aborted"));
                    break;
                }
            }
        }
    });
}

NcclProcessGroup::~NcclProcessGroup() {
    // Let issued collectives finish (bounded by the timeout), then release the communicator.
    const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    bool drained = false;
    while (!drained && std::chrono::steady_clock::now() < deadline) {
        {
            std::lock_guard lock(communicator_->mutex);
            drained = communicator_->aborted || communicator_->pending.empty();
        }
        if (!drained) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    {
        std::lock_guard lock(communicator_->mutex);
        communicator_->stopping = true;
        if (!drained) communicator_->fail("destroyed with collectives outstanding");
    }
    communicator_->wake.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    if (!communicator_->aborted) {
        cuda::DeviceGuard guard(device_);
        ncclCommDestroy(communicator_->comm);
    }
}

void NcclProcessGroup::check_health() {
    std::lock_guard lock(communicator_->mutex);
    if (communicator_->aborted)
        raise<DistributedError>("NcclProcessGroup", "rank ", rank(), " of ", world_size(), ": the group is unusable: ", communicator_->error);
}

std::shared_ptr<Work> NcclProcessGroup::launch(const char* op, const std::vector<Tensor>& tensors,
                                               const std::function<void(void* stream)>& issue) {
    check_health();
    for (const Tensor& tensor : tensors) check_tensor(op, tensor);
    cuda::DeviceGuard guard(device_);
    // The collective starts after what the caller queued so far (the tensors' producers).
    cuda::Event ready;
    ready.record(cuda::current_stream(device_));
    ready.wait(stream_);
    issue(stream_.raw());
    for (const Tensor& tensor : tensors) cuda::record_stream(tensor, stream_);
    auto done = std::make_shared<cuda::Event>();
    done->record(stream_);
    const std::string what = make_message(op, " on rank ", rank(), " of ", world_size(), " (", tensors.size(), " tensor(s), first ",
                                          tensors.empty() ? std::string("none") : tensors.front().describe(), ")");
    {
        std::lock_guard lock(communicator_->mutex);
        communicator_->pending.push_back({done, std::chrono::steady_clock::now() + options_.timeout, what});
    }
    return std::make_shared<NcclWork>(communicator_, done, device_, what);
}

std::shared_ptr<Work> NcclProcessGroup::all_reduce(const Tensor& tensor, ReduceOp op) {
    if (op == ReduceOp::average && !is_floating(tensor.dtype()))
        raise<DTypeError>("all_reduce", "average needs a floating tensor, got ", tensor.describe());
    if (tensor.dtype() == DType::boolean && (op == ReduceOp::sum || op == ReduceOp::average))
        raise<DTypeError>("all_reduce", "sum of a bool tensor is not defined; use max or min, got ", tensor.describe());
    return launch("all_reduce", {tensor}, [&](void* stream) {
        check_nccl(ncclAllReduce(tensor.raw_data(), tensor.raw_data(), static_cast<size_t>(tensor.numel()), nccl_type("all_reduce", tensor),
                                 nccl_op(op), communicator_->comm, static_cast<cudaStream_t>(stream)),
                   "all_reduce", "ncclAllReduce", communicator_->comm);
    });
}

std::shared_ptr<Work> NcclProcessGroup::broadcast(const Tensor& tensor, int root) { return broadcast_coalesced({tensor}, root); }

std::shared_ptr<Work> NcclProcessGroup::broadcast_coalesced(const std::vector<Tensor>& tensors, int root) {
    check_root("broadcast", root);
    return launch("broadcast", tensors, [&](void* stream) {
        check_nccl(ncclGroupStart(), "broadcast", "ncclGroupStart");
        for (const Tensor& tensor : tensors)
            check_nccl(ncclBroadcast(tensor.raw_data(), tensor.raw_data(), static_cast<size_t>(tensor.numel()), nccl_type("broadcast", tensor),
                                     root, communicator_->comm, static_cast<cudaStream_t>(stream)),
                       "broadcast", "ncclBroadcast", communicator_->comm);
        check_nccl(ncclGroupEnd(), "broadcast", "ncclGroupEnd", communicator_->comm);
    });
}

void NcclProcessGroup::barrier() {
    Tensor token = Tensor::zeros({1}, {.device = device()});
    std::shared_ptr<Work> work = all_reduce(token, ReduceOp::sum);
    // Block the host until it is done, without hanging past an abort.
    while (!work->completed()) {
        check_health();
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    check_health();
}

}  // namespace kasmina::dist
