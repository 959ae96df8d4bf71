// fabricd agent: one node of a cluster (agent/agent.h).
#include <unistd.h>

#include <iostream>
#include <thread>

#include "agent/agent.h"
#include "cli/commands.h"
#include "cli/job_flags.h"
#include "cli/security_flags.h"
#include "cli/metrics_flags.h"
#include "cli/signals.h"

namespace fabric::launcher::cli {

Registered add_agent(CLI::App& app) {
  auto* command = app.add_subcommand("agent", "Run a node agent: register with the coordinator and run the ranks "
                                              "it assigns to this node");
  auto options = std::make_shared<AgentOptions>();
  auto security = std::make_shared<SecurityFlags>();
  options->advertise_host = "";
  command->add_option("--coordinator", options->coordinator,
                      "host:port of fabricd serve; several, comma-separated, where coordinators elect a leader "
                      "(the agent follows it)")
      ->required();
  command->add_option("--node-name", options->node_name, "this node's name, unique in the cluster (default: "
                                                         "--tls-cert's common name, else the host name)");
  command->add_option("--advertise", options->advertise_host,
                      "the host or address other nodes reach this one at (its rendezvous and MASTER_ADDR)")
      ->required();
  command->add_option("--slots", options->slots, "ranks this node runs at once (usually its GPU count)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--rendezvous-listen", options->rendezvous_listen,
                      "host:port of this node's RendezvousService (port 0: any free port)")
      ->capture_default_str();
  add_security_flags(*command, *security, SecurityRole::kAgent);
  auto metrics_listen = std::make_shared<std::string>();
  add_metrics_flag(*command, *metrics_listen);
  return {command, [options, security, metrics_listen](const std::vector<std::string>&) {
            try {
              check_agent_security(*security);
            } catch (const std::exception& error) {
              return fail(kUsageError, error.what());
            }
            options->security = security->transport;
            if (security->transport.insecure) {
              std::cerr << "fabricd agent: WARNING: --insecure: plain text to the coordinator and the ranks" << std::endl;
            }
            if (options->node_name.empty()) options->node_name = default_node_name(*security);
            block_stop_signals();
            try {
              MetricsRegistry metrics;
              const auto metrics_server = start_metrics_server(*metrics_listen, metrics, "fabricd agent");
              options->metrics = &metrics;
              Agent agent(*options);
              const StopSignalHandler signals([&agent](int, bool) { agent.stop(); });
              agent.run();
            } catch (const std::exception& error) {
              return fail(kCannotListen, error.what());
            }
            return 0;
          }};
}

}  // namespace fabric::launcher::cli
