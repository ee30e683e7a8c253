#include "distributed/launcher.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "distributed/store.h"

namespace kasmina::dist {

std::string current_executable() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

int relaunch_self(int nproc, int argc, char** argv) {
    std::vector<std::string> arguments{current_executable()};
    for (int i = 1; i < argc; ++i) arguments.emplace_back(argv[i]);
    return launch_local(nproc, arguments);
}

int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) raise<DistributedError>("free_port", "socket failed");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    ::close(fd);
    if (!ok) raise<DistributedError>("free_port", "cannot bind a loopback socket");
    return ntohs(address.sin_port);
}

int launch_local(int nproc, const std::vector<std::string>& arguments) {
    if (nproc < 1) raise<DistributedError>("launch_local", "--nproc must be at least 1, got ", nproc);
    if (arguments.empty()) raise<DistributedError>("launch_local", "no program to launch");
    const int port = free_port();
    std::vector<pid_t> children;
    for (int rank = 0; rank < nproc; ++rank) {
        const pid_t pid = ::fork();
        if (pid < 0) {
            for (const pid_t child : children) ::kill(child, SIGTERM);
            raise<DistributedError>("launch_local", "fork failed for rank ", rank);
        }
        if (pid == 0) {
            ::setenv("RANK", std::to_string(rank).c_str(), 1);
            ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
            ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
            ::setenv("MASTER_ADDR", "127.0.0.1", 1);
            ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
            ::setenv("NCCL_NVLS_ENABLE", "0", 1);  // never NVLink multicast (see DEVICE.md)
            std::vector<char*> argv;
            for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
            argv.push_back(nullptr);
            ::execvp(argv[0], argv.data());
            std::fprintf(stderr, "launch_local: cannot run %s\n", argv[0]);
            ::_exit(127);
        }
        children.push_back(pid);
    }
    int first_failure = 0;
    size_t running = children.size();
    while (running > 0) {
        int status = 0;
        const pid_t done = ::waitpid(-1, &status, 0);
        if (done < 0) break;
        --running;
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (code != 0 && first_failure == 0) {
            first_failure = code;
            int rank = 0;
            for (size_t i = 0; i < children.size(); ++i)
                if (children[i] == done) rank = static_cast<int>(i);
            std::fprintf(stderr, "launch_local: rank %d exited with status %d; stopping the other ranks\n", rank, code);
            for (const pid_t child : children)
                if (child != done) ::kill(child, SIGTERM);
        }
    }
    return first_failure;
}

}  // namespace kasmina::dist
