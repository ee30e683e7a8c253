#include "distributed/store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

namespace kasmina::dist {
namespace {

enum Command : uint8_t { kSet = 1, kGet = 2, kAdd = 3 };

int64_t decode_count(const Bytes& value) {
    if (value.empty()) return 0;
    if (value.size() != sizeof(int64_t)) raise<DistributedError>("Store", "a counter holds ", value.size(), " bytes, expected 8");
    int64_t count = 0;
    std::memcpy(&count, value.data(), sizeof count);
    return count;
}

Bytes encode_count(int64_t count) {
    Bytes bytes(sizeof count);
    std::memcpy(bytes.data(), &count, sizeof count);
    return bytes;
}

void append_u32(Bytes& out, uint32_t value) {
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&value);
    out.insert(out.end(), bytes, bytes + 4);
}

uint32_t read_u32(const uint8_t* bytes) {
    uint32_t value = 0;
    std::memcpy(&value, bytes, 4);
    return value;
}

std::string system_error(const char* what) { return make_message(what, ": ", std::strerror(errno)); }

void send_all(int fd, const Bytes& bytes, const char* op) {
    size_t sent = 0;
    while (sent < bytes.size()) {
        const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) raise<DistributedError>(op, "the store connection failed while sending (", system_error("send"), ")");
        sent += static_cast<size_t>(n);
    }
}

// Reads exactly `size` bytes; false on timeout (SO_RCVTIMEO).
bool receive_all(int fd, uint8_t* out, size_t size, const char* op) {
    size_t got = 0;
    while (got < size) {
        const ssize_t n = ::recv(fd, out + got, size - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
        if (n <= 0) raise<DistributedError>(op, "the store server closed the connection (did rank 0 exit?)");
        got += static_cast<size_t>(n);
    }
    return true;
}

}  // namespace

void Store::wait_for_count(const std::string& key, int64_t target) {
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    int64_t count = 0;
    while ((count = add(key, 0)) < target) {
        if (std::chrono::steady_clock::now() > deadline)
            raise<DistributedError>("Store::wait_for_count", "'", key, "' reached ", count, " of ", target, " after ",
                                    timeout_.count(), " ms: a rank did not arrive (started? same MASTER_ADDR/MASTER_PORT?)");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

// ---- InMemoryStore ----------------------------------------------------------------------------------

void InMemoryStore::set(const std::string& key, const Bytes& value) {
    {
        std::lock_guard lock(mutex_);
        values_[key] = value;
    }
    changed_.notify_all();
}

Bytes InMemoryStore::get(const std::string& key) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout_, [&] { return values_.count(key) > 0; }))
        raise<DistributedError>("Store::get", "key '", key, "' was not set within ", timeout_.count(), " ms");
    return values_.at(key);
}

int64_t InMemoryStore::add(const std::string& key, int64_t delta) {
    int64_t count = 0;
    {
        std::lock_guard lock(mutex_);
        count = decode_count(values_[key]) + delta;
        values_[key] = encode_count(count);
    }
    changed_.notify_all();
    return count;
}

// ---- TcpStore ---------------------------------------------------------------------------------------

TcpStore::TcpStore(const std::string& host, int port, bool serve, std::chrono::milliseconds timeout)
    : Store(timeout), host_(host), port_(port) {
    if (port < 0 || port > 65535) raise<DistributedError>("TcpStore", "port ", port, " is outside [0, 65535]");
    if (serve) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        if (listen_fd_ < 0) raise<DistributedError>("TcpStore", system_error("socket"));
        const int on = 1;
        ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(static_cast<uint16_t>(port));
        address.sin_addr.s_addr = htonl(INADDR_ANY);
        if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listen_fd_, 128) != 0) {
            const std::string reason = system_error("bind/listen");
            ::close(listen_fd_);
            raise<DistributedError>("TcpStore", "rank 0 cannot serve on port ", port, " (", reason, "); pick another MASTER_PORT");
        }
        socklen_t length = sizeof address;
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
        port_ = ntohs(address.sin_port);
        if (::pipe(wake_fds_) != 0) raise<DistributedError>("TcpStore", system_error("pipe"));
        server_ = std::thread([this] { serve_loop(); });
    }

    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last_error = "no attempt";
    while (fd_ < 0) {
        addrinfo* found = nullptr;
        const int status = ::getaddrinfo(host.c_str(), std::to_string(port_).c_str(), &hints, &found);
        if (status != 0) {
            last_error = make_message("cannot resolve '", host, "': ", gai_strerror(status));
        } else {
            const int fd = ::socket(found->ai_family, found->ai_socktype, found->ai_protocol);
            if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
                fd_ = fd;
            } else {
                last_error = system_error("connect");
                if (fd >= 0) ::close(fd);
            }
            ::freeaddrinfo(found);
        }
        if (fd_ >= 0) break;
        if (std::chrono::steady_clock::now() > deadline) {
            shutdown();  // stop the server thread before raising from the constructor
            raise<DistributedError>("TcpStore", "cannot reach the store at ", host, ":", port_, " within ", timeout.count(),
                                    " ms (", last_error, "); is rank 0 running with the same MASTER_ADDR/MASTER_PORT?");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const int on = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    timeval receive_timeout{};
    receive_timeout.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    receive_timeout.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout);
}

TcpStore::~TcpStore() { shutdown(); }

void TcpStore::shutdown() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (server_.joinable()) {
        const uint8_t stop = 1;
        [[maybe_unused]] const ssize_t written = ::write(wake_fds_[1], &stop, 1);
        server_.join();
    }
    for (int& fd : wake_fds_)
        if (fd >= 0) ::close(fd), fd = -1;
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
}

Bytes TcpStore::request(uint8_t command, const std::string& key, const Bytes& value) {
    static constexpr const char* kNames[] = {"", "Store::set", "Store::get", "Store::add"};
    const char* op = kNames[command];
    std::lock_guard lock(request_mutex_);
    if (fd_ < 0) raise<DistributedError>(op, "the store connection was lost by an earlier timeout");
    Bytes frame{command};
    append_u32(frame, static_cast<uint32_t>(key.size()));
    frame.insert(frame.end(), key.begin(), key.end());
    append_u32(frame, static_cast<uint32_t>(value.size()));
    frame.insert(frame.end(), value.begin(), value.end());
    send_all(fd_, frame, op);
    uint8_t header[4];
    if (!receive_all(fd_, header, 4, op)) {
        ::close(fd_);
        fd_ = -1;
        raise<DistributedError>(op, "key '", key, "': no answer within ", timeout_.count(), " ms (a rank did not arrive?)");
    }
    Bytes answer(read_u32(header));
    if (!answer.empty() && !receive_all(fd_, answer.data(), answer.size(), op))
        raise<DistributedError>(op, "key '", key, "': the answer was cut off");
    return answer;
}

void TcpStore::set(const std::string& key, const Bytes& value) { request(kSet, key, value); }
Bytes TcpStore::get(const std::string& key) { return request(kGet, key, {}); }
int64_t TcpStore::add(const std::string& key, int64_t delta) { return decode_count(request(kAdd, key, encode_count(delta))); }

void TcpStore::serve_loop() {
    std::map<std::string, Bytes> values;
    std::map<int, Bytes> pending_input;               // bytes received per client, not yet a whole frame
    std::multimap<std::string, int> waiting_gets;     // key -> client
    auto answer = [](int fd, const Bytes& value) {
        Bytes frame;
        append_u32(frame, static_cast<uint32_t>(value.size()));
        frame.insert(frame.end(), value.begin(), value.end());
        try {
            send_all(fd, frame, "TcpStore server");
        } catch (const DistributedError&) {  // the client went away; its socket is dropped when poll says so
        }
    };
    auto publish = [&](const std::string& key) {
        auto [begin, end] = waiting_gets.equal_range(key);
        for (auto it = begin; it != end; ++it) answer(it->second, values[key]);
        waiting_gets.erase(begin, end);
    };
    while (true) {
        std::vector<pollfd> fds{{wake_fds_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
        for (const auto& [fd, buffer] : pending_input) fds.push_back({fd, POLLIN, 0});
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[0].revents) return;
        if (fds[1].revents & POLLIN) {
            const int client = ::accept(listen_fd_, nullptr, nullptr);
            if (client >= 0) {
                const int on = 1;
                ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
                pending_input[client];
            }
        }
        for (size_t i = 2; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            const int fd = fds[i].fd;
            uint8_t chunk[4096];
            const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
            if (n <= 0) {
                ::close(fd);
                pending_input.erase(fd);
                for (auto it = waiting_gets.begin(); it != waiting_gets.end();)
                    it = it->second == fd ? waiting_gets.erase(it) : std::next(it);
                continue;
            }
            Bytes& buffer = pending_input[fd];
            buffer.insert(buffer.end(), chunk, chunk + n);
            // Handle every whole frame: command, key length, key, value length, value.
            while (buffer.size() >= 5) {
                const uint32_t key_size = read_u32(buffer.data() + 1);
                if (buffer.size() < 9 + key_size) break;
                const uint32_t value_size = read_u32(buffer.data() + 5 + key_size);
                if (buffer.size() < 9 + key_size + value_size) break;
                const uint8_t command = buffer[0];
                const std::string key(buffer.begin() + 5, buffer.begin() + 5 + key_size);
                const Bytes value(buffer.begin() + 9 + key_size, buffer.begin() + 9 + key_size + value_size);
                buffer.erase(buffer.begin(), buffer.begin() + 9 + key_size + value_size);
                if (command == kSet) {
                    values[key] = value;
                    answer(fd, {});
                    publish(key);
                } else if (command == kGet) {
                    if (values.count(key)) answer(fd, values[key]);
                    else waiting_gets.emplace(key, fd);
                } else if (command == kAdd) {
                    int64_t count = 0;
                    try {
                        count = decode_count(values[key]) + decode_count(value);
                    } catch (const DistributedError&) {
                    }
                    values[key] = encode_count(count);
                    answer(fd, values[key]);
                    publish(key);
                }
            }
        }
    }
}

}  // namespace kasmina::dist
