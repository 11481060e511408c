// protattn program: one binary, one subcommand per topic; turns errors into messages and exit codes.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli_common.hpp"
#include "commands.hpp"
#include "protattn/error.hpp"

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

int fail(int code, const char* what, bool usage) {
  fmt::print(stderr, "protattn: error: {}\n", what);
  if (usage) fmt::print(stderr, "Run with --help for more information.\n");
  return code;
}

// Freed memory stays with the process instead of going back to the kernel. By default glibc
// maps blocks above a moving threshold afresh and returns the top of its heap once 128 KiB or more
// is free, so a server that builds a batch's buffers, embeddings and responses anew every time
// page-faults through all of them again: on the lent GPU machines fresh pages cost about as much
// as copying at 1.5 GB/s (issue 6: the atom_encoder's fetch of 33.5 MB took 22 ms on an H200
// host, 5.4 ms with freed memory kept). Blocks up to kMmapThreshold now come from the heap and
// up to kTrimThreshold of free heap is kept.
// PROTATTN_KEEP_FREED_MEMORY=0 keeps glibc's defaults (to measure the difference).
void keep_freed_memory() {
#if defined(__GLIBC__)
  constexpr int kMmapThreshold = 64 << 20;
  constexpr int kTrimThreshold = 1 << 30;
  const char* v = std::getenv("PROTATTN_KEEP_FREED_MEMORY");
  if (v && std::strcmp(v, "0") == 0) return;
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, kTrimThreshold);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();
  CLI::App app{"protattn: block-sparse attention over the atoms of protein structures"};
  app.require_subcommand(1);
  app.fallthrough(false);
  protattn::cli::add_info_command(app);
  protattn::cli::add_layout_command(app);
  protattn::cli::add_run_command(app);
  protattn::cli::add_bench_command(app);
  protattn::cli::add_embed_command(app);
  protattn::cli::add_init_model_command(app);
  protattn::cli::add_dist_command(app);
#ifdef PROTATTN_HAVE_SERVER
  protattn::cli::add_serve_command(app);
  protattn::cli::add_loop_command(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(kExitUsage, e.what(), true);
  } catch (const protattn::cli::UsageError& e) {
    return fail(kExitUsage, e.what(), true);
  } catch (const protattn::Error& e) {
    return fail(kExitError, e.what(), false);
  } catch (const std::bad_alloc&) {
    return fail(kExitError, "out of memory", false);
  } catch (const std::exception& e) {
    return fail(kExitError, fmt::format("unexpected failure: {}", e.what()).c_str(), false);
  }
  return 0;
}
