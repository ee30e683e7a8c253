// A local launcher (torchrun --standalone's role): starts N copies of a program on this host as the
// ranks of one job, with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set and NVLink multicast
// off (NCCL_NVLS_ENABLE=0). When one rank fails, the others are stopped, so a job never hangs on a
// dead peer.
#pragma once

#include <string>
#include <vector>

namespace kasmina::dist {

// Runs `arguments` (arguments[0]: the program, found through PATH unless it has a '/') as `nproc`
// ranks and waits for all of them. Returns 0 when every rank exited with 0, else the first failing
// rank's exit status (128 + signal for a rank killed by a signal).
int launch_local(int nproc, const std::vector<std::string>& arguments);

// Runs this very program, with the same arguments, as `nproc` ranks (launch_local of
// current_executable()); the ranks see WORLD_SIZE and take the rank's path.
int relaunch_self(int nproc, int argc, char** argv);

// The path of the running executable (/proc/self/exe), to relaunch oneself.
std::string current_executable();

// A TCP port nobody listens on right now (for MASTER_PORT).
int free_port();

}  // namespace kasmina::dist
