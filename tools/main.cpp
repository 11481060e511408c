// protattn program: one binary, one subcommand per topic; turns errors into messages and exit codes.
#include <exception>
#include <new>

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

}  // namespace

int main(int argc, char** argv) {
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
