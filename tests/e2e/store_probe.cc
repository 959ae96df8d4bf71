// store_probe: a rank that tries its launcher's store the way a stranger would, for the
// security tests. Started by fabricd (its identity in the environment), it sets one key,
// optionally posing as another job (--job ID) or with another secret (--secret TEXT, ""
// for none), and prints what happened: "stored", or "refused <kind>: <message>".
//
// Exit status: 0 stored, 10 refused UNAUTHENTICATED, 11 refused otherwise, 2 bad usage.
#include <cstring>
#include <iostream>
#include <string>

#include "fabric/worker/rendezvous_client.h"

int main(int argc, char** argv) {
  using namespace fabric::worker;
  std::optional<RankIdentity> identity;
  try {
    identity = identity_from_environment();
  } catch (const std::exception& error) {
    std::cout << "refused before calling: " << error.what() << std::endl;
    return 11;
  }
  if (!identity) {
    std::cerr << "store_probe: not started by fabricd (FABRICD_ENDPOINT is unset)" << std::endl;
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--job") {
      identity->job_id = argv[i + 1];
    } else if (flag == "--secret") {
      identity->secret = argv[i + 1];
    } else {
      std::cerr << "store_probe: unknown flag " << flag << std::endl;
      return 2;
    }
  }
  identity->endpoint = identity->store_endpoint;
  try {
    RendezvousClient client(*identity);
    client.set("probe", "written by store_probe");
    std::cout << "stored" << std::endl;
    return 0;
  } catch (const RendezvousError& error) {
    const bool unauthenticated = error.kind() == RendezvousErrorKind::kUnauthenticated;
    std::cout << "refused " << (unauthenticated ? "UNAUTHENTICATED" : "otherwise") << ": " << error.what() << std::endl;
    return unauthenticated ? 10 : 11;
  }
}
