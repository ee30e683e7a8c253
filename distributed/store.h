// The rendezvous of a process group: a small key-value store every rank reaches before the
// collectives exist (to share NCCL's unique id, to count arrivals, to agree on a generation).
// TcpStore serves it from rank 0 on MASTER_ADDR:MASTER_PORT (loopback by default); InMemoryStore
// serves threads of one process (tests). Every wait has a timeout and raises DistributedError.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/error.h"

namespace kasmina::dist {

// Raised for a failed or timed-out collective, rendezvous or cross-rank decision.
class DistributedError : public Error {
public:
    using Error::Error;
};

using Bytes = std::vector<uint8_t>;

class Store {
public:
    virtual ~Store() = default;
    virtual void set(const std::string& key, const Bytes& value) = 0;
    // The value of `key`, waiting until some rank has set it (raises DistributedError after the timeout).
    virtual Bytes get(const std::string& key) = 0;
    // Adds `delta` to the integer at `key` (0 when absent) and returns the new value.
    virtual int64_t add(const std::string& key, int64_t delta) = 0;
    // Waits until the integer at `key` reaches `target` (raises DistributedError after the timeout).
    void wait_for_count(const std::string& key, int64_t target);
    std::chrono::milliseconds timeout() const { return timeout_; }

protected:
    explicit Store(std::chrono::milliseconds timeout) : timeout_(timeout) {}
    std::chrono::milliseconds timeout_;
};

// A store shared by the threads of one process.
class InMemoryStore final : public Store {
public:
    explicit InMemoryStore(std::chrono::milliseconds timeout = std::chrono::seconds(60)) : Store(timeout) {}
    void set(const std::string& key, const Bytes& value) override;
    Bytes get(const std::string& key) override;
    int64_t add(const std::string& key, int64_t delta) override;

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    std::map<std::string, Bytes> values_;
};

// A TCP key-value store. The rank that passes `serve = true` (rank 0) listens on host:port and
// answers every rank, itself included; the others connect, retrying until the timeout.
class TcpStore final : public Store {
public:
    TcpStore(const std::string& host, int port, bool serve, std::chrono::milliseconds timeout = std::chrono::seconds(60));
    ~TcpStore() override;
    TcpStore(const TcpStore&) = delete;
    TcpStore& operator=(const TcpStore&) = delete;

    void set(const std::string& key, const Bytes& value) override;
    Bytes get(const std::string& key) override;
    int64_t add(const std::string& key, int64_t delta) override;
    int port() const { return port_; }  // the bound port (useful with port 0 on the serving rank)

private:
    Bytes request(uint8_t command, const std::string& key, const Bytes& value);
    void serve_loop();
    void shutdown();  // closes the connection, stops and joins the server

    std::string host_;
    int port_ = 0;
    int listen_fd_ = -1;
    int wake_fds_[2] = {-1, -1};  // the destructor writes here to stop serve_loop
    std::thread server_;
    int fd_ = -1;  // this rank's connection
    std::mutex request_mutex_;
};

}  // namespace kasmina::dist
