// fabricd: the launcher daemon, one binary in three roles (docs/ARCHITECTURE.md):
//   fabricd run --nproc-per-node 4 --max-restarts 2 ./train --epochs 10   one job, this node
//   fabricd serve --listen 0.0.0.0:7070 --state /var/lib/fabricd          the coordinator
//   fabricd agent --coordinator HOST:7070 --node-name n1 --advertise HOST  a node agent
//   fabricd submit|list|status|watch|logs|cancel --server HOST:7070 ...   JobService clients
//   fabricd consolidate CKPT_DIR model.pt                                 an fsdp folder as one file
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"
#include "cli/job_flags.h"

#ifndef FABRICD_VERSION
#define FABRICD_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  using namespace fabric::launcher::cli;
  CLI::App app{"fabricd: start and supervise the ranks of training jobs, on one node or across many"};
  app.set_version_flag("--version", std::string("fabricd ") + FABRICD_VERSION);
  app.require_subcommand(1);
  std::vector<Registered> commands = add_client_commands(app);
  commands.push_back(add_run(app));
  commands.push_back(add_serve(app));
  commands.push_back(add_agent(app));
  commands.push_back(add_consolidate(app));
  for (Registered& registered : add_credential_commands(app)) commands.push_back(std::move(registered));

  std::vector<std::string> before, program;
  split_at_separator(argc, argv, before, program);
  std::vector<std::string> reversed(before.rbegin(), before.rend() - 1);  // CLI11 takes them reversed, without argv[0]
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsageError;
  }
  for (auto& [subcommand, command] : commands) {
    if (!subcommand->parsed()) continue;
    try {
      return command(program);
    } catch (const std::exception& error) {  // e.g. an unreadable --tls-ca or --token-file
      return fail(kUsageError, error.what());
    }
  }
  return fail(kUsageError, "name a subcommand (fabricd --help)");
}
