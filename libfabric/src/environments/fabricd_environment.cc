// fabricd: FABRICD_ENDPOINT is set. torchrun's variables give the ranks; the launcher's
// services (store, barriers, progress) come from the process's LauncherLink.
#include "environments/launcher_link.h"
#include "environments/variables.h"
#include "utilities/env.h"

namespace fabric::environments {
namespace {

class FabricdEnvironment final : public FixedEnvironment {
 public:
  FabricdEnvironment(Values values, LauncherLink* link) : FixedEnvironment(std::move(values)), link_(link) {}
  LauncherServices* launcher() const override { return link_; }

 private:
  LauncherLink* link_;
};

}  // namespace

std::unique_ptr<ClusterEnvironment> detect_fabricd() {
  if (!env::get("FABRICD_ENDPOINT")) return nullptr;
  Values values = from_torchrun_variables("fabricd");
  // Connects now, so that an uncaught exception from here on is reported.
  return std::make_unique<FabricdEnvironment>(std::move(values), LauncherLink::get());
}

}  // namespace fabric::environments
