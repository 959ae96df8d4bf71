// The zygote's fork loop (fabric/worker/standby.h), run by the standby hook before main().
#pragma once

namespace fabric::worker {

// Serves fork requests on the control socket `fd`. Returns only in a forked child, made the
// rank it was asked to be; the zygote ends in _exit once fabricd closes the socket.
void serve_as_zygote(int fd);

}  // namespace fabric::worker
