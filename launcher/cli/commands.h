// fabricd's subcommands, one file each. Each add_* registers its subcommand on the app and
// returns it with the function that runs it once the command line is parsed; `program` is what
// followed a literal "--" (see job_flags.h).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace fabric::launcher::cli {

using Command = std::function<int(const std::vector<std::string>& program)>;
using Registered = std::pair<CLI::App*, Command>;

Registered add_run(CLI::App& app);
Registered add_serve(CLI::App& app);
Registered add_agent(CLI::App& app);
// consolidate FOLDER FILE: runs fabric-consolidate (a libfabric program).
Registered add_consolidate(CLI::App& app);
// certs init|issue, tokens add: a small cluster's credentials.
std::vector<Registered> add_credential_commands(CLI::App& app);
// submit, list, status, watch, logs, cancel: JobService clients.
std::vector<Registered> add_client_commands(CLI::App& app);

// "fabricd: message" on stderr; returns code.
int fail(int code, const std::string& message);

}  // namespace fabric::launcher::cli
