"""Real nodes beside the KWOK pools: kubelet + containerd that run real containers.

KWOK proves the objects Berth creates; these nodes prove that what the
objects describe runs: commands, exit codes, OOM kills, logs, sshd, peers over
DNS, NodePorts and Services. Each node is a kubelet, a containerd and Berth's
fake-GPU device plugin (``deploy/local-cluster/deviceplugin``); the nodes
share one kube-proxy and one CoreDNS, all host processes recorded by PID.

Two kubelets on one machine need two things kept apart: the device-plugin
directory (fixed at ``/var/lib/kubelet/device-plugins`` whatever the root dir)
and the cgroup tree. Each node's containerd therefore starts in a mount
namespace of its own (``unshare``, slave propagation: it sees the host's
mounts, the host does not see its), where that directory is the node's own;
its kubelet and device plugin join the namespace with ``nsenter``, so the
volumes the kubelet mounts are the ones containerd gives the containers. Each
node has its own cgroup root, and ``stop`` ends every process left in it.

See ``network.py`` for how no packet leaves the machine, and
``../shared/notes/real-node.md`` (project notes) for the settings found to work.
"""

from cli.local.realnode.node import RealNodes, remove_images, start, stop

__all__ = ["RealNodes", "remove_images", "start", "stop"]
