// protattn dist: the process group without MPI: rank variables, a rendezvous through files and a
// launcher of one process per GPU.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "protattn/dist.hpp"
#include "protattn/error.hpp"

extern char** environ;

namespace protattn::dist {
namespace {

namespace fs = std::filesystem;

constexpr auto kPollInterval = std::chrono::milliseconds(20);
// After one rank fails, the others get this long to end on SIGTERM before SIGKILL.
constexpr auto kTermGrace = std::chrono::seconds(10);

// A whole non-negative number, or Error naming the variable.
int parse_count(const char* name, const char* value) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value, &end, 10);
  if (errno || end == value || *end != '\0' || v < 0 || v > 1'000'000)
    throw Error(std::string("dist: ") + name + "='" + value + "' is not a whole number >= 0");
  return static_cast<int>(v);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace

RankInfo rank_from_env() {
  struct Names {
    const char *rank, *world, *local;
  };
  for (const Names& n : {Names{"RANK", "WORLD_SIZE", "LOCAL_RANK"},
                         Names{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"}}) {
    const char* r = std::getenv(n.rank);
    const char* w = std::getenv(n.world);
    if (!r && !w) continue;
    if (!r || !w)
      throw Error(std::string("dist: ") + (r ? n.rank : n.world) + " is set but " + (r ? n.world : n.rank) + " is not");
    RankInfo info;
    info.rank = parse_count(n.rank, r);
    info.world = parse_count(n.world, w);
    const char* l = std::getenv(n.local);
    info.local = l ? parse_count(n.local, l) : info.rank;
    info.from_env = true;
    if (info.world < 1) throw Error(std::string("dist: ") + n.world + " must be >= 1");
    if (info.rank >= info.world)
      throw Error(std::string("dist: ") + n.rank + "=" + r + " is not below " + n.world + "=" + w);
    return info;
  }
  return RankInfo{};
}

void publish_file(const std::string& dir, const std::string& name, const void* data, std::size_t bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("dist: cannot create the rendezvous directory " + dir + ": " + ec.message());
  const fs::path final_path = fs::path(dir) / name;
  // A reader sees the file whole or not at all: write a unique temporary, then rename.
  const fs::path tmp = fs::path(dir) / ("." + name + ".tmp." + std::to_string(::getpid()));
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    f.close();
    if (!f) throw Error("dist: cannot write " + tmp.string());
  }
  fs::rename(tmp, final_path, ec);
  if (ec) throw Error("dist: cannot rename " + tmp.string() + " to " + final_path.string() + ": " + ec.message());
}

std::vector<std::uint8_t> wait_file(const std::string& dir, const std::string& name, std::size_t bytes,
                                    double timeout_s) {
  const fs::path path = fs::path(dir) / name;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    std::error_code ec;
    if (fs::exists(path, ec) && fs::file_size(path, ec) == bytes && !ec) {
      std::ifstream f(path, std::ios::binary);
      std::vector<std::uint8_t> data(bytes);
      f.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(bytes));
      if (f && f.gcount() == static_cast<std::streamsize>(bytes)) return data;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error("dist: " + path.string() + " did not appear (" + std::to_string(bytes) + " bytes) within " +
                  std::to_string(static_cast<int>(timeout_s)) +
                  " s: did rank 0 start, and do all ranks share that directory (--rendezvous)?");
    std::this_thread::sleep_for(kPollInterval);
  }
}

void spawn_ranks(const std::vector<std::string>& argv, int world, const std::vector<std::string>& env) {
  if (argv.empty()) throw Error("dist: nothing to launch");
  if (world < 1) throw Error("dist: --gpus must be >= 1, got " + std::to_string(world));
  // Environment of the children: ours, less the variables set here, plus those.
  std::vector<std::string> names{"RANK", "WORLD_SIZE", "LOCAL_RANK"};
  for (const std::string& e : env) names.push_back(e.substr(0, e.find('=')));
  std::vector<std::string> base;
  for (char** e = environ; *e; ++e) {
    const std::string s(*e);
    const std::string key = s.substr(0, s.find('='));
    bool replaced = false;
    for (const std::string& n : names) replaced = replaced || key == n;
    if (!replaced) base.push_back(s);
  }
  base.insert(base.end(), env.begin(), env.end());
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  std::vector<pid_t> pids(static_cast<std::size_t>(world), -1);
  std::vector<int> status(static_cast<std::size_t>(world), 0);
  std::vector<bool> done(static_cast<std::size_t>(world), false), stopped(static_cast<std::size_t>(world), false);
  const auto stop_all = [&](int sig) {
    for (int r = 0; r < world; ++r)
      if (pids[r] > 0 && !done[r]) {
        ::kill(pids[r], sig);
        stopped[r] = true;
      }
  };
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> e = base;
    e.push_back("RANK=" + std::to_string(r));
    e.push_back("WORLD_SIZE=" + std::to_string(world));
    e.push_back("LOCAL_RANK=" + std::to_string(r));
    std::vector<char*> envp;
    for (std::string& s : e) envp.push_back(s.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), envp.data());
    if (rc != 0) {
      stop_all(SIGTERM);
      for (int q = 0; q < r; ++q) ::waitpid(pids[q], nullptr, 0);
      throw Error("dist: cannot start rank " + std::to_string(r) + " (" + argv[0] + "): " + std::strerror(rc));
    }
    pids[r] = pid;
  }
  // Poll our own children only (waitpid(-1) could reap children that are not ours).
  int left = world;
  bool failed = false;
  auto term_deadline = std::chrono::steady_clock::time_point::max();
  while (left > 0) {
    for (int r = 0; r < world; ++r) {
      if (done[r]) continue;
      const pid_t got = ::waitpid(pids[r], &status[r], WNOHANG);
      if (got == 0) continue;
      done[r] = true;
      --left;
      if (got < 0 || !WIFEXITED(status[r]) || WEXITSTATUS(status[r]) != 0) {
        if (!failed) {
          failed = true;
          stop_all(SIGTERM);  // the others would wait for the failed rank forever
          term_deadline = std::chrono::steady_clock::now() + kTermGrace;
        }
      }
    }
    if (left > 0) {
      if (std::chrono::steady_clock::now() > term_deadline) {
        stop_all(SIGKILL);
        term_deadline = std::chrono::steady_clock::time_point::max();
      }
      std::this_thread::sleep_for(kPollInterval);
    }
  }
  if (!failed) return;
  std::string what, rest;
  for (int r = 0; r < world; ++r) {
    if (stopped[r]) rest += (rest.empty() ? "" : ", ") + std::to_string(r);
    else if (!WIFEXITED(status[r]) || WEXITSTATUS(status[r]) != 0)
      what += (what.empty() ? "" : ", ") + ("rank " + std::to_string(r) + " failed with " + describe_status(status[r]));
  }
  throw Error("dist: " + what + " (" + std::to_string(world) + " ranks" +
              (rest.empty() ? std::string(")") : "; stopped ranks " + rest + ")"));
}

}  // namespace protattn::dist
