// A TCP port that was free a moment ago (bind to port 0, read it back, close). Whoever binds
// it next may race another process for it, as with torchrun's own choice: it is only for
// MASTER_PORT, which programs that bring their own TCPStore bind; fabricd's own services
// listen on port 0 directly and never race.
//
// host_name(): what this machine calls itself, for the node a `fabricd run` reports.
#pragma once

#include <string>

namespace fabric::launcher {

// gethostname(), or "localhost" when it fails.
std::string host_name();

// loopback_only: a port free on 127.0.0.1, else on every interface. 0 if none could be had.
int free_tcp_port(bool loopback_only);

}  // namespace fabric::launcher
