// protattn dist: loading NCCL at run time (see nccl_lib.hpp for why).
#include "dist/nccl_lib.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace protattn::dist::nccl {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSoname = "libnccl.so.2";

// pip's nvidia-nccl-cu12/cu13 wheels put the library in site-packages/nvidia/nccl/lib; the GPU
// machines hold PyTorch's in a virtual environment under /opt.
void add_python_candidates(const fs::path& root, int depth, std::vector<std::string>& out) {
  std::error_code ec;
  if (depth < 0 || !fs::is_directory(root, ec)) return;
  for (const auto& e : fs::directory_iterator(root, fs::directory_options::skip_permission_denied, ec)) {
    if (!e.is_directory(ec)) continue;
    const std::string name = e.path().filename().string();
    if (name.rfind("python3", 0) == 0) {
      for (const char* sp : {"site-packages", "dist-packages"}) {
        const fs::path lib = e.path() / sp / "nvidia" / "nccl" / "lib" / kSoname;
        if (fs::exists(lib, ec)) out.push_back(lib.string());
      }
    } else if (depth > 0) {
      add_python_candidates(e.path(), depth - 1, out);
    }
  }
}

std::vector<std::string> candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("PROTATTN_NCCL_LIB"); env && *env) c.push_back(env);
  c.push_back(kSoname);
#ifdef PROTATTN_NCCL_LIBRARY
  c.push_back(PROTATTN_NCCL_LIBRARY);
#endif
  for (const char* dir : {"/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/lib/x86_64-linux-gnu"})
    c.push_back(std::string(dir) + "/" + kSoname);
  // /opt/<venv>/lib/python3.x, /usr/lib/python3.x, /usr/local/lib/python3.x
  add_python_candidates("/opt", 3, c);
  add_python_candidates("/usr/lib", 0, c);
  add_python_candidates("/usr/local/lib", 0, c);
  return c;
}

template <typename F>
void bind(void* h, F& f, const char* name, std::string& missing) {
  f = reinterpret_cast<F>(::dlsym(h, name));
  if (!f) missing += std::string(missing.empty() ? "" : ", ") + name;
}

Api load() {
  std::string tried;
  for (const std::string& path : candidates()) {
    void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      tried += "\n  " + path + ": " + ::dlerror();
      continue;
    }
    Api a;
    std::string missing;
    bind(h, a.GetVersion, "ncclGetVersion", missing);
    bind(h, a.GetUniqueId, "ncclGetUniqueId", missing);
    bind(h, a.CommInitRank, "ncclCommInitRank", missing);
    bind(h, a.CommDestroy, "ncclCommDestroy", missing);
    bind(h, a.CommAbort, "ncclCommAbort", missing);
    bind(h, a.GetErrorString, "ncclGetErrorString", missing);
    bind(h, a.GetLastError, "ncclGetLastError", missing);
    bind(h, a.GroupStart, "ncclGroupStart", missing);
    bind(h, a.GroupEnd, "ncclGroupEnd", missing);
    bind(h, a.Send, "ncclSend", missing);
    bind(h, a.Recv, "ncclRecv", missing);
    bind(h, a.AllReduce, "ncclAllReduce", missing);
    bind(h, a.AllGather, "ncclAllGather", missing);
    if (!missing.empty()) {
      tried += "\n  " + path + ": lacks " + missing;
      ::dlclose(h);
      continue;
    }
    a.path = path;
    if (a.GetVersion(&a.version) != ncclSuccess) a.version = 0;
    return a;  // kept loaded for the life of the process
  }
  throw Error("dist: cannot load NCCL (set PROTATTN_NCCL_LIB to a libnccl.so.2); tried:" + tried);
}

}  // namespace

const Api& api() {
  static std::once_flag once;
  static Api a;
  static std::string failure;
  std::call_once(once, [] {
    try {
      a = load();
    } catch (const Error& e) {
      failure = e.what();
    }
  });
  if (!failure.empty()) throw Error(failure);
  return a;
}

void throw_nccl_error(ncclResult_t rc, const char* stmt, const char* file, int line) {
  const Api& a = api();
  const char* last = a.GetLastError ? a.GetLastError(nullptr) : nullptr;
  throw Error(std::string("NCCL error '") + (a.GetErrorString ? a.GetErrorString(rc) : "?") + "' from `" + stmt +
              "` at " + file + ":" + std::to_string(line) + (last && *last ? std::string(": ") + last : std::string()));
}

}  // namespace protattn::dist::nccl
