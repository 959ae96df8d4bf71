"""Network namespaces as test nodes, the Python twin of tests/support/network_lab.h: one
namespace per node, joined through a bridge in a "switch" namespace by veth pairs, with
addresses from 198.18.0.0/24 (RFC 2544's range for network tests). Needs root and
iproute2; NetworkLab.unavailable() says why a test must skip otherwise. Everything is
removed (processes killed, namespaces deleted) by close().
"""
import os
import shutil
import subprocess


def sh(command):
    subprocess.run(command, shell=True, check=True, capture_output=True, text=True)


class NetworkLab:
    @staticmethod
    def unavailable():
        if os.geteuid() != 0:
            return "network namespaces need root (CI runs as root)"
        if not shutil.which("ip"):
            return "iproute2's ip is not installed (scripts/bootstrap installs it)"
        probe = f"fabric-probe-{os.getpid()}"
        if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
            return "ip netns add failed: no namespaces in this sandbox"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return ""

    def __init__(self, names):
        """Nodes named `names` get 198.18.0.1, .2, ... in that order."""
        self.prefix = f"fabpy{os.getpid()}-"
        self.addresses = {}
        self._made = []
        switch = self.namespace("sw")
        self._add(switch)
        sh(f"ip -n {switch} link add br0 type bridge && ip -n {switch} link set br0 up")
        for i, name in enumerate(names):
            node, port, address = self.namespace(name), f"p{i}", f"198.18.0.{i + 1}"
            self._add(node)
            sh(f"ip link add eth0 netns {node} type veth peer name {port} netns {switch}")
            sh(f"ip -n {switch} link set {port} master br0 up")
            sh(f"ip -n {node} addr add {address}/24 dev eth0 && ip -n {node} link set eth0 up && "
               f"ip -n {node} link set lo up")
            self.addresses[name] = address

    def namespace(self, name):
        return self.prefix + name

    def exec(self, name):
        """The argv prefix that runs a command inside node `name`."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def _add(self, namespace):
        sh(f"ip netns add {namespace}")
        self._made.append(namespace)

    def close(self):
        for namespace in reversed(self._made):
            subprocess.run(f"ip netns pids {namespace} 2>/dev/null | xargs -r kill -9; ip netns del {namespace}",
                           shell=True, capture_output=True)
        self._made.clear()
