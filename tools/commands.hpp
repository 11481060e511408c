// protattn program: each subcommand registers itself on the top-level CLI11 app.
#pragma once
#include <CLI/CLI.hpp>

namespace protattn::cli {

// Checks of a numeric option's value, in place of CLI11's PositiveNumber / NonNegativeNumber (whose
// message spells out the whole double range: "Value 0 not in range 0.000000 to 1797...000").
// The message names the option and the value: "--iters: must be greater than 0, got 0".
extern const CLI::Validator kPositive;
extern const CLI::Validator kNonNegative;

void add_info_command(CLI::App& app);
void add_layout_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_bench_command(CLI::App& app);   // tools/cmd_bench.cpp
void add_embed_command(CLI::App& app);   // tools/cmd_embed.cpp
void add_init_model_command(CLI::App& app);  // tools/cmd_init_model.cpp
void add_dist_command(CLI::App& app);    // tools/cmd_dist.cpp
#ifdef PROTATTN_HAVE_SERVER
void add_serve_command(CLI::App& app);   // tools/cmd_serve.cpp
void add_loop_command(CLI::App& app);    // tools/cmd_loop.cpp
#endif

}  // namespace protattn::cli
